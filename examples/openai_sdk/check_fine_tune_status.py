"""Show a fine-tuning job's status and latest events, or list every job.

python check_fine_tune_status.py ftjob-...          # one job
python check_fine_tune_status.py ftjob-... --wait   # poll until it finishes
python check_fine_tune_status.py --list             # all jobs, newest first
"""

from __future__ import annotations

import argparse
import os
import time

from openai import OpenAI

FINISHED = ("succeeded", "failed", "cancelled")


def show(client: OpenAI, job_id: str) -> str:
    job = client.fine_tuning.jobs.retrieve(job_id)
    print(f"Job ID: {job.id}\nStatus: {job.status}\nModel: {job.model}")
    if job.fine_tuned_model:
        print(f"Fine-tuned model: {job.fine_tuned_model}")
    if job.error and job.error.message:
        print(f"Error: {job.error.message}")
    print("Recent events:")
    for event in reversed(client.fine_tuning.jobs.list_events(job_id, limit=5).data):
        print(f"  {event.message}")
    return job.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--list", action="store_true", help="List all jobs.")
    parser.add_argument("--wait", action="store_true", help="Poll until the job finishes.")
    args = parser.parse_args()
    client = OpenAI(
        base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed-on-loopback"),
    )
    if args.list or not args.job_id:
        for job in client.fine_tuning.jobs.list(limit=10):
            print(f"{job.id}  {job.status:<10}  {job.fine_tuned_model or job.model}")
        return
    status = show(client, args.job_id)
    while args.wait and status not in FINISHED:
        time.sleep(2)
        status = client.fine_tuning.jobs.retrieve(args.job_id).status
    if args.wait:
        show(client, args.job_id)
        raise SystemExit(0 if status == "succeeded" else 1)


if __name__ == "__main__":
    main()
