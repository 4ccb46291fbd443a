"""`tunelab export`: a trained model for serving engines (Hugging Face directory, adapter, GGUF)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from tunelab.cli import common
from tunelab.cli.options import choice_option, json_option, output_option
from tunelab.errors import usage_error
from tunelab.providers.registry import provider_class
from tunelab.providers.resolve import resolve_chat_model

DTYPES = ("bf16", "fp16", "fp32")  # tunelab.engine.export.DTYPES, without importing torch


@click.command("export")
@click.argument("model")
@output_option(
    "Directory to write the exported model to.", type=click.Path(path_type=Path), required=True
)
@click.option(
    "--merge/--no-merge",
    default=True,
    show_default=True,
    help="Fold a LoRA adapter into the base weights (a plain model), or export the adapter "
    "alone in peft's layout.",
)
@choice_option(
    "--format",
    "export_format",
    choices=["hf", "gguf"],
    default="hf",
    help="hf: a Hugging Face directory (vLLM, TGI, transformers) or, with --no-merge, the "
    "adapter alone (vLLM's LoRA serving); gguf: one GGUF file and an Ollama Modelfile "
    "(llama.cpp, Ollama; Llama-architecture models).",
)
@choice_option(
    "--gguf-type",
    choices=["f16", "f32"],
    default="f16",
    help="Precision of the GGUF's weight matrices (norms stay f32); --dtype does not apply.",
)
@choice_option(
    "--dtype",
    choices=DTYPES,
    default="fp32",
    help="Precision of the written weights with --format hf (bf16 and fp16 halve the size).",
)
@click.option("--force", is_flag=True, help="Replace an existing --output directory.")
@json_option("Print what was written as JSON.")
def export_cmd(
    model: str,
    output: Path,
    merge: bool,
    export_format: str,
    gguf_type: str,
    dtype: str,
    force: bool,
    as_json: bool,
) -> int:
    """Export MODEL for other tools: a `tunelab train` output directory, or a `ft:` name of a
    model fine-tuned on this machine (`tunelab models list`).

    \b
    Examples:
      tunelab export runs/trec -o trec-merged
      tunelab export ft:smollm2-135m-instruct:local:trec:abc123 -o trec-bf16 --dtype bf16
      tunelab export runs/trec -o trec-adapter --no-merge
      tunelab export runs/trec -o trec-gguf --format gguf
    """
    model_dir = trained_directory(model)
    from tunelab.engine.export import export_model  # torch: only when exporting

    if not as_json:
        common.stderr.print(f"exporting {model}…", highlight=False)
    result = export_model(
        model_dir,
        output,
        merge=merge,
        force=force,
        format=export_format,
        gguf_type=gguf_type,
        dtype=dtype,
    )
    if as_json:
        common.print_json(result)
        return 0
    what = {"peft_adapter": "peft adapter", "gguf": "GGUF model"}.get(
        result["format"], "Hugging Face model"
    )
    merged = " (LoRA merged into the base weights)" if result["merged"] else ""
    say = common.stdout.print
    precision = result["dtype"]  # a GGUF's is --gguf-type: --dtype is an hf export's
    say(
        f"[green]✓ exported[/] {what}{merged}, {precision}, to {escape(str(output))}",
        highlight=False,
    )
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


def trained_directory(model: str) -> Path:
    """The training output MODEL names: a directory, or a local fine-tuned model's name."""
    if model.startswith("ft:"):
        found = resolve_chat_model(model)
        if not provider_class(found.provider).runs_here:
            raise usage_error(
                "not_exportable",
                f"{model} lives on {found.provider}: its weights cannot be downloaded here.",
                hint="export models fine-tuned on this machine",
            )
        return Path(found.model)
    path = Path(model)
    if not path.is_dir():
        raise usage_error(
            "model_not_found",
            f"{model} is neither a training output directory nor a local `ft:` model.",
            hint="`tunelab models list --fine-tuned` lists the fine-tuned models",
        )
    return path
