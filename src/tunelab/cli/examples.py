"""The "Examples" section of every command's --help, kept in one place.

`add_examples` appends them to each command's help when the CLI is assembled; a command
whose docstring already has its own Examples section keeps it. A test checks that every
command has one.
"""

from __future__ import annotations

import click

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "tunelab format data.tsv -o data/train.jsonl",
        "tunelab validate data/train.jsonl --val data/val.jsonl",
        "tunelab train --train data/train.jsonl --val data/val.jsonl -o runs/first",
        'tunelab chat runs/first "What is the capital of Peru ?"',
    ),
    "format": (
        "tunelab format trec.tsv --text-column text --label-column label -o data/trec_train.jsonl",
        "tunelab format queries.json --context-field db_id -o data/q_train.jsonl",
        "tunelab format chats.db --preview",
        "tunelab format --to preference --from-eval evalrun-abc123 -o data/pairs.jsonl",
    ),
    "validate": (
        "tunelab validate data/train.jsonl --val data/val.jsonl",
        "tunelab validate data/train.jsonl -m gpt-4o-mini --json",
    ),
    "analyze": (
        "tunelab analyze data/train.jsonl --val data/val.jsonl --html report.html",
        "tunelab analyze data/train.jsonl -m gpt-4o-mini",
    ),
    "demo": ("tunelab demo", "tunelab demo -o demo-output --train-steps 0"),
    "train": (
        "tunelab train --train data/train.jsonl --val data/val.jsonl -o runs/trec",
        "tunelab train --train data/train.jsonl -o runs/trec --max-steps 50 --dry-run",
        "tunelab train --train data/train.jsonl -o runs/trec --resume",
    ),
    "chat": (
        'tunelab chat runs/trec "What is the capital of Peru ?"',
        'tunelab chat smollm2-135m-instruct -s "Be brief."',
        'echo "Hello" | tunelab chat ft:smollm2-135m-instruct:local:trec:1a2b3c4d',
        'tunelab chat runs/queries "Oldest head?" --constrain schema '
        '--schema "Collections: head(age, name)"',
    ),
    "jobs": ("tunelab jobs create --train data/train.jsonl", "tunelab jobs list"),
    "jobs create": (
        "tunelab jobs create --train data/train.jsonl --val data/val.jsonl --suffix trec",
        "tunelab jobs create --train data/train.jsonl --max-steps 60 --wait",
        "tunelab jobs create --provider together -m Qwen/Qwen3-8B --train data/train.jsonl",
    ),
    "jobs list": ("tunelab jobs list", "tunelab jobs list --provider local --json"),
    "jobs show": ("tunelab jobs show ftjob-abc123", "tunelab jobs show ftjob-abc123 --json"),
    "jobs events": ("tunelab jobs events ftjob-abc123 --follow",),
    "jobs checkpoints": ("tunelab jobs checkpoints ftjob-abc123",),
    "jobs wait": (
        "tunelab jobs wait ftjob-abc123",
        "tunelab jobs wait ftjob-abc123 --timeout 3600 --json",
    ),
    "jobs import": ("tunelab jobs import ftjob-abc123 --provider openai",),
    "jobs cancel": ("tunelab jobs cancel ftjob-abc123",),
    "jobs pause": ("tunelab jobs pause ftjob-abc123",),
    "jobs resume": ("tunelab jobs resume ftjob-abc123",),
    "jobs delete": ("tunelab jobs delete ftjob-abc123",),
    "models": ("tunelab models list", "tunelab models list --fine-tuned --json"),
    "models list": ("tunelab models list", "tunelab models list --provider local --json"),
    "models delete": ("tunelab models delete ft:smollm2-135m-instruct:local:trec:1a2b3c4d",),
    "models alias": (
        "tunelab models alias ft:gpt-4o-mini-2024-07-18:acme:tickets:abc123 "
        "ft:smollm2-135m-instruct:local:tickets:1a2b3c4d",
        "tunelab models alias --remove ft:gpt-4o-mini-2024-07-18:acme:tickets:abc123",
    ),
    "providers": ("tunelab providers list", "tunelab providers add vllm http://gpu:8000/v1"),
    "providers list": ("tunelab providers list", "tunelab providers list --json"),
    "providers add": (
        "tunelab providers add vllm http://gpu-box:8000/v1",
        "tunelab providers add lab https://llm.example.com/v1 --key-env LAB_API_KEY",
    ),
    "providers remove": ("tunelab providers remove vllm",),
    "providers check": ("tunelab providers check vllm", "tunelab providers check vllm --json"),
    "worker": ("tunelab worker", "tunelab worker --exit-when-idle 60"),
    "serve": ("tunelab serve", "tunelab serve --host 0.0.0.0 --port 8000"),
    "ui": ("tunelab ui", "tunelab ui --port 8080 --data-dir data --no-browser"),
    "eval": (
        "tunelab eval classify --data data/trec_val.jsonl -m smollm2-135m-instruct -m ft:…",
        "tunelab eval list",
    ),
    "eval classify": (
        "tunelab eval classify --data data/trec_val.jsonl -m smollm2-135m-instruct -m runs/trec",
        "tunelab eval classify --data trec.tsv -m runs/trec --limit 200 -o eval/trec",
    ),
    "eval queries": (
        "tunelab eval queries --data data/q_val.jsonl -m runs/docspider",
        "tunelab eval queries --data data/q_val.jsonl -m runs/docspider --documents docs/",
    ),
    "eval tools": (
        "tunelab eval tools --data data/tools_val.jsonl -m smollm2-135m-instruct -m runs/tools",
        "tunelab eval tools --data data/tools_val.jsonl -m runs/tools --limit 50 --json",
    ),
    "eval judge": (
        "tunelab eval judge --data prompts.jsonl -m runs/chat -m smollm2-135m-instruct "
        "--judge-model gpt-4.1 --mode pairwise",
        "tunelab eval judge --conversations chats.db --judge-model gpt-4.1",
    ),
    "eval grade": (
        "tunelab eval grade --grader city.json --data items.jsonl --samples answers.jsonl",
        "tunelab eval grade --grader city.json --data items.jsonl -m runs/geo --limit 50 "
        "-o grades.jsonl",
    ),
    "eval list": ("tunelab eval list", "tunelab eval list --json"),
    "eval show": ("tunelab eval show evalrun-abc123",),
    "eval compare": ("tunelab eval compare evalrun-abc123 evalrun-def456",),
    "migrate": ("tunelab migrate openai inventory", "tunelab migrate openai plan"),
    "migrate openai": ("tunelab migrate openai inventory", "tunelab migrate openai run --yes"),
    "migrate openai inventory": (
        "tunelab migrate openai inventory",
        "tunelab migrate openai inventory --json",
    ),
    "migrate openai plan": (
        "tunelab migrate openai plan",
        "tunelab migrate openai plan --target together --json",
    ),
    "migrate openai distil": ("tunelab migrate openai distil --yes",),
    "migrate openai run": (
        "tunelab migrate openai run --yes",
        "tunelab migrate openai run --target together --distil --yes",
    ),
    "migrate openai compare": (
        "tunelab migrate openai compare ft:gpt-4o-mini-2024-07-18:acme:tickets:abc123",
        "tunelab migrate openai compare ft:gpt-4o-mini-2024-07-18:acme:tickets:abc123 "
        "--task classify --limit 200",
    ),
    "generate-conversations": (
        "tunelab generate-conversations --ideas ideas.json -m runs/chat -o chats.db",
    ),
}


def add_examples(group: click.Group) -> None:
    """Append its Examples to the help of `group` and of every command under it."""
    for path, command in walk(group):
        help_text = command.help or ""
        examples = EXAMPLES.get(path)
        if not examples or "Examples:" in help_text:
            continue
        lines = "\n".join(f"  {example}" for example in examples)
        command.help = f"{help_text.rstrip()}\n\n\b\nExamples:\n{lines}"


def walk(command: click.Command, path: str = ""):
    """(path, command) for `command` and every command below it; the root's path is ""."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, f"{path} {name}".strip())
