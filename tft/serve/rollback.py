"""`tft serve rollback`: the ensemble goes back to an earlier committed build in one atomic step.

Builds never delete a version: each keeps its build record (`<name>/<version>/tft-serve.json`) and the
configs it committed (`tft-config.pbtxt` in each version folder). A rollback checks the target build's
files against its record, lets each step list both its current and its target version, replaces the
ensemble's config.pbtxt (the commit, one rename, exactly as a build commits), then leaves the steps
with the target version only. A server reading the repository picks it up on its next load, as it
would a build.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tft.fsutil import atomic_write_json, atomic_write_text, file_sha256, hold
from tft.manifest import SERVE_MANIFEST, read_serve_record
from tft.serve.backends import RepositoryError
from tft.serve.layout import parse_pbtxt, read_config, to_pbtxt, with_versions
from tft.serve.records import read_serve_manifests
from tft.serve.repository import SAVED_CONFIG, history_after, recover, write_requirements

log = logging.getLogger("tft")


def builds(repository: Path, name: str) -> dict[int, dict]:
    """{version: build record} of every build of `name` that recorded itself."""
    out = {}
    for folder in (repository / name).iterdir() if (repository / name).is_dir() else ():
        if folder.name.isdigit() and (folder / SERVE_MANIFEST).is_file():
            try:
                out[int(folder.name)] = read_serve_record(folder / SERVE_MANIFEST)
            except Exception:  # noqa: BLE001 - a damaged record is not a build to go back to
                continue
    return dict(sorted(out.items()))


def rollback(repository: str | Path, name: str, to: int | None = None, wait: bool = False) -> dict:
    repository = Path(repository)
    with hold(repository, wait=wait, option="--repository"):
        recover(repository, name)
        current = read_serve_manifests(repository).get(name)
        if current is None:
            raise RepositoryError(f"{repository}: no model {name!r} built by `tft serve build`")
        known = builds(repository, name)
        target_version = to if to is not None else previous_build(current, known)
        if target_version is None and len(known) <= 1:
            raise RepositoryError(f"{repository / name}: v{current['version']} is its first build; nothing to roll "
                                  "back to")
        if target_version is None:
            raise RepositoryError(f"{repository / name}: every build served before v{current['version']} was rolled "
                                  f"back from; --to V chooses one anyway ({', '.join(f'v{v}' for v in known)})")
        if target_version == current["version"]:
            raise RepositoryError(f"--to {to}: {name} serves v{to} already")
        if target_version not in known:
            raise RepositoryError(f"--to {to}: {name} has builds {', '.join(f'v{v}' for v in known)}")
        target = known[target_version]
        _check_files(repository, target)
        steps = target["steps"]
        versions = target["model_versions"]
        saved = {model: repository / model / str(versions[model]) / SAVED_CONFIG for model in [*steps, name]}
        missing = [str(p) for p in saved.values() if not p.is_file()]
        if missing:
            raise RepositoryError(f"{missing[0]}: missing; v{target_version} was built before tft kept each version's "
                                  "config, so it cannot be put back (build it again instead)")
        # the steps list the version in use and the target: whichever the ensemble pins is loadable
        for step in steps:
            in_use = current["model_versions"].get(step, versions[step])
            config = parse_pbtxt(saved[step].read_text(encoding="utf-8"))
            atomic_write_text(repository / step / "config.pbtxt", to_pbtxt(with_versions(config, [in_use, versions[step]])))
        # the commit: the ensemble's config of the target build, in one rename
        atomic_write_text(repository / name / "config.pbtxt", saved[name].read_text(encoding="utf-8"))
        for step in steps:  # tidy: only the target version loaded
            config = read_config(saved[step])
            atomic_write_text(repository / step / "config.pbtxt", to_pbtxt(with_versions(config, [versions[step]])))
        record = {**target, "files": {k: v for k, v in target["files"].items() if not k.endswith("/config.pbtxt")}}
        for model in [*steps, name]:
            record["files"][f"{model}/config.pbtxt"] = file_sha256(repository / model / "config.pbtxt")
        record["rolled_back_from"] = current["version"]
        record.update(history_after(current, served=target_version, rolled_back_from=current["version"]))
        atomic_write_json(repository / name / str(target_version) / SERVE_MANIFEST, record)
        atomic_write_json(repository / name / SERVE_MANIFEST, record)
        write_requirements(repository, record)
        log.info("%s: %s rolled back from v%s to v%s", repository, name, current["version"], target_version)
        return record


def previous_build(current: dict, known: dict[int, dict]) -> int | None:
    """The build served before the current one that the user did not roll back from. Records written before tft
    kept the history: the newest earlier version."""
    if "served_before" not in current:
        earlier = [v for v in known if v < current["version"]]
        return earlier[-1] if earlier else None
    rolled = set(current.get("rolled_back", []))
    for version in reversed(current["served_before"]):
        if version in known and version not in rolled:
            return version
    return None


def _check_files(repository: Path, record: dict) -> None:
    for rel, sha in record.get("files", {}).items():
        if rel.endswith("/config.pbtxt"):
            continue  # the configs are rewritten by the rollback itself
        path = repository / rel
        if not path.is_file() or file_sha256(path) != sha:
            raise RepositoryError(f"{path}: {'missing' if not path.is_file() else 'changed'} since v{record['version']} "
                                  "was built; cannot roll back to it")
