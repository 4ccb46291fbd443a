"""Ask a fine-tuned model a question (streamed with --stream).

    python use_fine_tuned_model.py "ft:smollm2-135m-instruct:local:custom-model:1a2b3c4d" "Hi"
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("question")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    client = OpenAI(
        base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed-on-loopback"),
    )
    messages = [{"role": "user", "content": args.question}]
    if args.stream:
        stream = client.chat.completions.create(
            model=args.model, messages=messages, max_tokens=args.max_tokens, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()
        return
    response = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=args.max_tokens
    )
    print(response.choices[0].message.content)


if __name__ == "__main__":
    main()
