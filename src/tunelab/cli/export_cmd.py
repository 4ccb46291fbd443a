"""`tunelab export`: a trained model for serving engines (Hugging Face directory, adapter, GGUF)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from tunelab.cli import common
from tunelab.engine.export import export_model


@click.command("export")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write the exported model to.",
)
@click.option(
    "--merge/--no-merge",
    default=True,
    show_default=True,
    help="Fold a LoRA adapter into the base weights (a plain model), or export the adapter "
    "alone in peft's layout.",
)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["hf", "gguf"]),
    default="hf",
    show_default=True,
    help="hf: a Hugging Face directory (vLLM, TGI, transformers) or, with --no-merge, the "
    "adapter alone (vLLM's LoRA serving); gguf: one GGUF file and an Ollama Modelfile "
    "(llama.cpp, Ollama; Llama-architecture models).",
)
@click.option(
    "--gguf-type",
    type=click.Choice(["f16", "f32"]),
    default="f16",
    show_default=True,
    help="Precision of the GGUF's weight matrices.",
)
@click.option("--force", is_flag=True, help="Replace an existing --output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_cmd(
    model_dir: Path,
    output: Path,
    merge: bool,
    export_format: str,
    gguf_type: str,
    force: bool,
    as_json: bool,
) -> int:
    """Export the model trained in MODEL_DIR (a `tunelab train` output) for other tools."""
    if not as_json:
        common.stderr.print(f"exporting {model_dir}…", highlight=False)
    result = export_model(
        model_dir, output, merge=merge, force=force, format=export_format, gguf_type=gguf_type
    )
    if as_json:
        common.print_json(result)
        return 0
    what = {"peft_adapter": "peft adapter", "gguf": "GGUF model"}.get(
        result["format"], "Hugging Face model"
    )
    merged = " (LoRA merged into the base weights)" if result["merged"] else ""
    say = common.stdout.print
    say(f"[green]✓ exported[/] {what}{merged} to {escape(str(output))}", highlight=False)
    say(f"  files: {escape(', '.join(result['files']))}", highlight=False)
    if result["format"] == "gguf":
        say(
            f"  run it with: ollama create NAME -f {escape(str(output / 'Modelfile'))}",
            highlight=False,
        )
    if result["format"] == "hf_model":
        say(
            f"  load it with AutoModelForCausalLM.from_pretrained({escape(repr(str(output)))})",
            highlight=False,
        )
    return 0
