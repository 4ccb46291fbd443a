"""Upload a training file, wait until it is processed, create a fine-tuning job.

The seeds' `fine_tune.py`, unchanged except for where the client points: with
`OPENAI_BASE_URL=http://127.0.0.1:8000/v1` it runs against `tunelab serve` and trains a model
you own (the default base is the bundled SmolLM2; pass any model `tunelab serve` can load).

    python fine_tune.py training_data.jsonl [--model smollm2-135m-instruct] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import time

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("training_file")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--suffix", default="custom-model")
    args = parser.parse_args()
    client = OpenAI(
        base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed-on-loopback"),
    )

    print(f"[1/3] Uploading training file: {args.training_file}")
    with open(args.training_file, "rb") as handle:
        training_file = client.files.create(file=handle, purpose="fine-tune")
    print(f"✓ File uploaded successfully!\n  File ID: {training_file.id}")

    print("[2/3] Waiting for file to be processed...")
    while training_file.status not in ("processed", "error"):
        time.sleep(1)
        training_file = client.files.retrieve(training_file.id)
    if training_file.status == "error":
        raise SystemExit(f"✗ The file was rejected: {training_file.status_details}")
    print("✓ File processed successfully!")

    print("[3/3] Creating fine-tuning job...")
    job = client.fine_tuning.jobs.create(
        training_file=training_file.id,
        model=args.model,
        suffix=args.suffix,
        hyperparameters={"n_epochs": args.epochs},
    )
    print(f"✓ Fine-tuning job created successfully!\n\nJob ID: {job.id}")
    print(f"Model: {job.model}\nStatus: {job.status}")


if __name__ == "__main__":
    main()
