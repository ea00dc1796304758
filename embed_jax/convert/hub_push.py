"""`--push_to_hub=ORG/NAME`: an exported folder uploaded to a Hugging Face Hub model repository (opt-in; the export
itself never touches a network).

    check_push(repo_id)          before any work: the id's form, a token, the Hub not switched off (HF_HUB_OFFLINE)
    url = push(folder, repo_id)  create the repository if needed, upload the folder as one commit

Each failure is one line naming the flag and what to do: no token, offline, no network, refused by the Hub.
`api` is any object with huggingface_hub.HfApi's `create_repo` and `upload_folder` (the default, HfApi(token=...)).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
COMMIT_MESSAGE = "Upload an embed_jax student (python -m embed_jax.convert.hf)"


class PushError(ValueError):
    """The push cannot run or failed; the message names --push_to_hub and what to do."""


def token() -> str | None:
    return get_token()


def check_push(repo_id: str) -> None:
    """Refuses, before the export starts, a push that cannot succeed from here."""
    if not REPO_ID.fullmatch(repo_id):
        raise PushError(f"--push_to_hub={repo_id}: write the Hub repository as ORG/NAME (e.g. "
                        "--push_to_hub=my-org/minilm-student)")
    if constants.HF_HUB_OFFLINE:
        raise PushError(f"--push_to_hub={repo_id}: the Hub is switched off here (HF_HUB_OFFLINE=1); unset it, or "
                        "export without --push_to_hub and upload the folder later")
    if not token():
        raise PushError(f"--push_to_hub={repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN "
                        "(a token with write access to the repository)")


def push(folder: Path, repo_id: str, *, private: bool = False, api: Any = None) -> str:
    """Uploads `folder` to the model repository `repo_id` (created if missing); returns the commit's URL."""
    check_push(repo_id)
    api = api or HfApi(token=token())
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   commit_message=COMMIT_MESSAGE)
    except HfHubHTTPError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PushError(f"--push_to_hub={repo_id}: the Hub refused the upload ({first_line}); the folder "
                        f"{folder} is complete, upload it later with `hf upload {repo_id} {folder}`") from None
    except (OSError, ConnectionError) as error:
        raise PushError(f"--push_to_hub={repo_id}: could not reach {endpoint()} ({type(error).__name__}); the "
                        f"folder {folder} is complete, upload it when online with `hf upload {repo_id} "
                        f"{folder}`") from None
    except Exception as error:  # the HTTP client's transport errors (httpx, httpx2, ...) are not OSError subclasses
        if not type(error).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise
        raise PushError(f"--push_to_hub={repo_id}: could not reach {endpoint()} ({type(error).__name__}); the "
                        f"folder {folder} is complete, upload it when online with `hf upload {repo_id} "
                        f"{folder}`") from None
    return str(getattr(commit, "commit_url", commit))


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
