"""Registered models named by a Hugging Face repo id and revision. A replica's artifact is
then `hf://OWNER/NAME@REVISION`, resolved to a directory when the model server starts:
from a local mirror when the machine has one (SWITCHBOARD_HF_MIRROR_DIR, laid out
`<mirror>/<owner>/<name>/<revision>/`), otherwise with huggingface_hub's snapshot_download
into the cache directory. Only where the machine's operator sets HF_HUB_OFFLINE=0 does it
reach the hub (or the endpoint HF_ENDPOINT names); otherwise it reads that cache alone."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

SCHEME = "hf://"
MIRROR_VARIABLE = "SWITCHBOARD_HF_MIRROR_DIR"
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_REVISION_LENGTH = 255
# What the built-in server loads: config, tokenizer and safetensors files, not the other
# weight formats a repo often carries beside them.
FETCHED_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]


class HubFetchError(Exception):
    pass


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not a Hugging Face model id of the form owner/name, if it is not."""
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        return (
            "Use the form owner/name, as on huggingface.co (for example HuggingFaceTB/SmolLM2-135M-Instruct): each part 1-96 "
            'letters, digits, dots, dashes and underscores, starting and ending with a letter or digit, without "--" or "..".'
        )
    return None


def revision_problem(revision: str) -> str | None:
    if len(revision) > MAX_REVISION_LENGTH or not _REVISION.match(revision) or ".." in revision:
        return (
            f"Use a commit hash (which pins the files), a branch or a tag: 1-{MAX_REVISION_LENGTH} letters, digits, dots, "
            'dashes, underscores and slashes, each part starting with a letter or digit, without "..".'
        )
    return None


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.repo_id}@{self.revision}"

    @classmethod
    def parse(cls, artifact: str) -> HubModel | None:
        """The repo an `hf://` artifact names; None for any other artifact (a directory).
        Raises ValueError for a malformed one."""
        if not artifact.startswith(SCHEME):
            return None
        repo_id, _, revision = artifact.removeprefix(SCHEME).partition("@")
        problem = repo_id_problem(repo_id) or revision_problem(revision)
        if problem:
            raise ValueError(f"{artifact}: give hf://OWNER/NAME@REVISION. {problem}")
        return cls(repo_id=repo_id, revision=revision)


def mirror_dir() -> Path | None:
    value = os.environ.get(MIRROR_VARIABLE, "")
    return Path(value) if value else None


def network_allowed() -> bool:
    """Whether HF_HUB_OFFLINE is explicitly off. Read here, at the call, rather than from
    huggingface_hub's constants, which keep whatever the variable was when it was first
    imported (modelserver.loading sets it to 1 after transformers has imported it)."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().upper() in {"0", "OFF", "NO", "FALSE"}


def fetch(model: HubModel, *, cache_dir: Path, mirror: Path | None) -> Path:
    """The model's directory on this machine. With a mirror, only the mirror is read."""
    if mirror is not None:
        directory = mirror / model.repo_id / model.revision
        if not (directory / "config.json").is_file():
            raise HubFetchError(
                f"{model.uri} is not in the mirror {mirror} ({MIRROR_VARIABLE}): put the repo's files at {directory}, "
                f"e.g. `hf download {model.repo_id} --revision {model.revision} --local-dir {directory}`"
            )
        return directory
    try:
        path = snapshot_download(
            model.repo_id,
            revision=model.revision,
            cache_dir=cache_dir / "hub",
            allow_patterns=FETCHED_FILES,
            local_files_only=not network_allowed(),
        )
        return Path(path)
    except LocalEntryNotFoundError as error:
        raise HubFetchError(
            f"{model.uri} is not cached on this machine and it does not reach the hub ({error}). "
            f"Set HF_HUB_OFFLINE=0 where the cluster has network, or {MIRROR_VARIABLE} to a local mirror."
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise HubFetchError(f"{model.uri} could not be fetched: {error}") from None
