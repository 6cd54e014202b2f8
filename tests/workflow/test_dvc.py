"""DVC as its users expect it (docs/dvc.md), checked with the real tools on the tiny run.

* dvc.yaml and the Snakemake DAG name the same outputs; each stage tracks exactly the config
  keys its jobs read (every job's --config-json in a forced dry run) and depends on the library
  and its rules.
* After the run (`make reproduce` = run-workflow.sh + dvc-adopt.sh) in a git clone, `dvc status`
  is clean and `dvc repro` runs nothing; dvc-adopt.sh outside git does nothing and exits 0.
* With every mtime rewritten (as checkout/pull/commit do), a forced stage runs only its rules
  and rewrites no other file.
* select.lam=0.3 plans only what reads lambda' in Snakemake's dry run and in `dvc status`.
* push to a local-directory remote, git clone, scripts/dvc-pull.py: status clean, `dvc repro`
  and `snakemake` run nothing, provenance records came along; an unreachable remote fails in one
  line and changes nothing; a pull from an incomplete push names the missing outputs.
* `dvc plots show --json`: each plot's Vega-Lite spec encodes what its title says.

All tests share one git + DVC project made from the session's tiny run (no second workflow
run). Run only these: `.venv/bin/pytest tests/workflow/test_dvc.py` (about 3 minutes, 2 cores).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from tests.workflow.test_workflow import REPO, _assert_ok, _env, _job_counts, _tree

pytestmark = pytest.mark.workflow

GIT_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def _sh(
    cwd: Path, *args: str, ok: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=_env() | GIT_ENV, capture_output=True, text=True, timeout=timeout
    )
    if ok:
        _assert_ok(proc)
    return proc


def _contents(root: Path) -> dict[str, bytes | None]:
    """Every file DVC tracks (data/, results/, figures/; pre-training checkpoints are no
    output) by path; provenance records (run.json: argv, timings) only by name."""
    return {
        str(p.relative_to(root)): None if p.name.endswith("run.json") else p.read_bytes()
        for top in ("data", "results", "figures")
        for p in sorted((root / top).rglob("*"))
        if p.is_file() and "checkpoints" not in p.parts and p.name != ".snakemake_timestamp"
    }


def _outputs_tree(root: Path) -> dict[str, int]:
    """Every output file (data/, results/, figures/) with its mtime."""
    return {k: v for k, v in _tree(root).items() if k.startswith(("data/", "results/", "figures/"))}


def _ran_rules(log: str) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):", log, re.M))


@pytest.fixture(scope="session")
def project(clean_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project holding the tiny run, as `make reproduce` leaves a clone: the
    workflow run (here: the session's run, copied with its mtimes and .snakemake records; the
    wrapper then finds nothing to do) followed by scripts/dvc-adopt.sh. dvc.yaml reads params
    from config/config.yaml, so that is the tiny config layered over the demo one."""
    root = tmp_path_factory.mktemp("dvc") / "project"
    shutil.copytree(clean_run, root, symlinks=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy2(REPO / name, root / name)
    for sub in (".dvc", "scripts", "workflow"):
        shutil.rmtree(root / sub, ignore_errors=True)
        shutil.copytree(REPO / sub, root / sub, ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.rmtree(root / "src", ignore_errors=True)
    shutil.copytree(
        REPO / "src" / "testtime",
        root / "src" / "testtime",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(demo, yaml.safe_load((root / "config" / "tiny.yaml").read_text()))
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(demo))
    _sh(root, "git", "init", "-q", "-b", "main")
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-qm", "workflow")
    run = _sh(root, "scripts/run-workflow.sh", "--cores", "2")
    assert "Nothing to be done" in run.stdout + run.stderr
    adopt = _sh(root, "scripts/dvc-adopt.sh")
    assert "recorded in dvc.lock" in adopt.stderr
    # dvc commit rewrites the outs; the run must still be up to date for Snakemake, or a second
    # `make reproduce` would redo everything (scripts/keep-mtimes.py)
    again = _sh(root, "snakemake", "-n", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-qm", "adopted run")
    return root


def test_dvc_and_snakemake_name_the_same_outputs() -> None:
    """Each Snakemake output lies in exactly one DVC out; each DVC out holds a Snakemake output
    or is the *.run.json provenance record of one."""
    from dvc.repo import Repo

    proc = _sh(REPO, "snakemake", "--summary", "--cores", "1")
    lines = proc.stdout.strip().splitlines()
    header = lines[0].split("\t")
    smk_outputs = {Path(line.split("\t")[header.index("output_file")]) for line in lines[1:]}
    assert smk_outputs, "the Snakemake DAG lists no outputs"

    repo = Repo(str(REPO))
    dvc_outs = [Path(str(out)) for stage in repo.index.stages for out in stage.outs]
    assert len(dvc_outs) == len(set(dvc_outs)), "a DVC out is declared twice"

    def covering(path: Path) -> list[Path]:
        return [out for out in dvc_outs if path == out or out in path.parents]

    uncovered = sorted(str(p) for p in smk_outputs if len(covering(p)) != 1)
    assert not uncovered, f"Snakemake outputs not in exactly one DVC out: {uncovered}"
    records = {p.with_name(p.name + ".run.json") for p in smk_outputs}
    empty = sorted(
        str(out)
        for out in dvc_outs
        if out not in records and not any(out == p or out in p.parents for p in smk_outputs)
    )
    assert not empty, f"DVC outs that no Snakemake rule writes: {empty}"


def test_dvc_stages_depend_on_the_whole_library_and_their_rules() -> None:
    """Every DVC stage depends on src/testtime as a whole (no hand-kept module list to drift),
    on common.smk and on the rules file that defines its Snakemake rules; every code dep
    exists."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    rules = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        rules |= {name: smk.name for name in re.findall(r"^rule (\w+):", smk.read_text(), re.M)}
    for name, entry in dvc["stages"].items():
        stage = entry.get("do", entry)
        code = [d for d in stage["deps"] if not d.startswith(("data/", "results/"))]
        assert [d for d in code if d.startswith("src/")] == ["src/testtime"], name
        own = stage["cmd"].split(" -- ")[0].split()[1:]  # ${smk} <own rules> -- <targets>
        smk = {f"workflow/rules/{rules[r]}" for r in own}
        assert set(code) - {"src/testtime"} == smk | {"workflow/rules/common.smk"}, name
        assert all((REPO / d).exists() for d in code), name
    assert "__pycache__/" in (REPO / ".dvcignore").read_text()


def _leaves(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_leaves(v, f"{prefix}{k}.") for k, v in node.items()))
    return {prefix.rstrip(".")}


def test_each_stage_tracks_exactly_the_keys_its_jobs_read(project: Path) -> None:
    """A forced dry run lists every job's --config-json; the config keys (leaf paths) of the jobs
    whose outputs lie in a stage's outs are that stage's params. Two documented exceptions: a
    per-variant stage needs no select.methods (its name is the variant), and finetune@<method>
    tracks select.adaptive_alphas for every method (foreach gives all one params list; only
    sift reads it)."""
    from dvc.repo import Repo

    dry = _sh(project, "snakemake", "-n", "-p", "--forceall", "--cores", "1").stdout
    jobs: list[tuple[list[str], set[str]]] = []
    outputs: list[str] = []
    for line in dry.splitlines():
        if line.strip().startswith("output:"):
            outputs = line.split(":", 1)[1].strip().split(", ")
        elif "--config-json" in line:
            text = shlex.split(line)[shlex.split(line).index("--config-json") + 1]
            jobs.append((outputs, _leaves(json.loads(text))))
    assert len(jobs) > 30, dry[-2000:]
    from testtime.config import validate_config

    config = validate_config(yaml.safe_load((project / "config" / "config.yaml").read_text()))
    repo = Repo(str(project))
    for stage in repo.index.stages:
        outs = [Path(str(o.fs_path)).relative_to(project) for o in stage.outs]
        keys = set().union(
            *(
                k
                for outputs, k in jobs
                if any(o == Path(p) or o in Path(p).parents for o in outs for p in outputs)
            )
        )
        name = stage.name
        assert keys, name
        declared = set()
        for dep in stage.params:
            declared |= {
                leaf for key in dep.params for leaf in _leaves(_dotted(config, key), f"{key}.")
            }
        missing, extra = keys - declared, declared - keys
        if "@" in name:
            missing -= {"select.methods"}
        if name.startswith("finetune@") and name != "finetune@sift":
            extra -= {"select.adaptive_alphas"}
        assert not missing and not extra, (name, missing, extra)


def _dotted(config: dict, key: str) -> object:
    node: object = config
    for part in key.split("."):
        node = node[part]  # type: ignore[index]
    return node


def test_reproduce_in_a_clone_leaves_dvc_clean(project: Path, tmp_path: Path) -> None:
    """Item 1: after the run and dvc-adopt.sh (what `make reproduce` does), nothing is stale;
    outside a git repository dvc-adopt.sh says why and exits 0."""
    assert "up to date" in _sh(project, "dvc", "status").stdout
    repro = _sh(project, "dvc", "repro")
    assert "Running stage" not in repro.stdout, repro.stdout
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copytree(REPO / ".dvc", plain / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.copy2(REPO / "dvc.yaml", plain / "dvc.yaml")
    alone = _sh(plain, str(REPO / "scripts" / "dvc-adopt.sh"))
    assert "not a git repository" in alone.stderr and not (plain / "dvc.lock").exists()


def test_a_stage_runs_only_its_own_rules_whatever_the_mtimes(
    project: Path, clean_run: Path
) -> None:
    """Item 2: rewrite every output's mtime newest-upstream-last (worse than any checkout),
    then force the aggregate stage: only `aggregate` runs, no other file changes, and its
    output is byte-identical to the Snakemake run's."""
    files = sorted(p for top in ("data", "results", "figures") for p in (project / top).rglob("*"))
    for path in reversed([p for p in files if p.is_file()]):
        path.touch()
    before = _contents(project)
    proc = _sh(project, "dvc", "repro", "--force", "--single-item", "aggregate")
    assert _ran_rules(proc.stdout + proc.stderr) == {"aggregate", "stage_finetune"}, proc.stdout
    assert _contents(project) == before
    assert "up to date" in _sh(project, "dvc", "status").stdout


def test_lambda_change_plans_only_what_reads_lambda(project: Path) -> None:
    """Item 3: select.lam=0.3. Every selector records the query's sigma^2 at select.lam (and US
    chooses by it), so the selections at the main lambda' (5 methods + 2 memory-subset variants)
    and their fine-tuning rerun; the base model and the lambda' sweep variant (its own lambda')
    do not, in Snakemake's plan and in `dvc status` alike."""
    config_path = project / "config" / "config.yaml"
    original = config_path.read_text()
    config = yaml.safe_load(original)
    config["select"]["lam"] = 0.3
    config_path.write_text(yaml.safe_dump(config))
    try:
        dry = _sh(project, "snakemake", "-n", "--cores", "1")
        plan = _job_counts(dry.stdout + dry.stderr)
        assert plan == {"select": 7, "finetune": 14, "aggregate": 1, "report": 1, "all": 1}
        outputs = re.findall(r"^\s+output: (.*)$", dry.stdout, re.M)
        assert not [o for o in outputs if "sift_lam0.1" in o or "finetune/base/" in o]
        status = json.loads(_sh(project, "dvc", "status", "--json").stdout)
        assert set(status) == {
            "select",
            *(f"finetune@{m}" for m in ("sift", "nn", "nn_f", "us", "random")),
            "finetune_memory@0.5",
            "aggregate",
            "report",
        }, sorted(status)
    finally:
        config_path.write_text(original)


def test_undeclared_key_is_refused(project: Path) -> None:
    """A job's config holds only its variant's keys: the sweep variant's config knows no other
    method, and reading a key it does not declare fails instead of seeing a default."""
    from testtime.config import ConfigError, load_config_json
    from testtime.methods import variant_job_config

    config = yaml.safe_load((project / "config" / "config.yaml").read_text())
    from testtime.config import validate_config

    full = validate_config(config)
    text = json.dumps(variant_job_config(full, "sift_lam0.1", "select"))
    assert "lam" not in load_config_json(text)["select"]
    proc = _sh(
        project,
        "testtime",
        "select",
        "--config-json",
        text,
        "--method",
        "nn",
        "--candidates",
        "data/tiny/candidates.parquet",
        "--memory-embeddings",
        "data/tiny/embeddings/memory.0.npy",
        "--prompt-embeddings",
        "data/tiny/embeddings/prompts.npy",
        "--out",
        str(project / "nn-again.parquet"),
        ok=False,
    )
    assert proc.returncode != 0 and "unknown method 'nn'" in proc.stderr, proc.stderr
    base = json.dumps(variant_job_config(full, "base", "finetune"))
    assert "select" not in json.loads(base)
    with pytest.raises(ConfigError):
        load_config_json('{"select": {"lam": -1}}')


def _clone(project: Path, dest: Path) -> Path:
    _sh(dest.parent, "git", "clone", "-q", str(project), dest.name)
    return dest


def test_pull_in_a_fresh_clone_reruns_nothing(
    project: Path, clean_run: Path, tmp_path: Path
) -> None:
    """Item 4 and its bad input: push to a local-directory remote; a teammate's clone pulls with
    scripts/dvc-pull.py and then neither `dvc repro` nor `snakemake` has anything to do, with
    every output and its provenance record byte-identical. An unreachable remote fails in one
    line and leaves the files as they were; a pull of an incomplete push names what is
    missing."""
    remote = tmp_path / "remote"
    _sh(project, "dvc", "remote", "add", "-d", "-f", "shared", str(remote))
    _sh(project, "git", "commit", "-qam", "remote")
    _sh(project, "dvc", "push", "-q")

    clone = _clone(project, tmp_path / "clone")
    pulled = _sh(clone, "scripts/dvc-pull.py")
    assert _contents(clone) == _contents(project), "pulled outputs differ"
    assert (clone / "data" / "tiny" / "selections" / "sift.parquet.run.json").is_file()
    assert "up to date" in _sh(clone, "dvc", "status").stdout
    assert "Running stage" not in _sh(clone, "dvc", "repro").stdout
    again = _sh(clone, "snakemake", "-n", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr, pulled.stderr

    # unreachable remote (and no local cache, so the pull needs it): one line, nothing changed
    _sh(clone, "dvc", "remote", "add", "gone", "http://127.0.0.1:9/store")
    shutil.rmtree(clone / ".dvc" / "cache")
    before = _outputs_tree(clone)
    bad = _sh(clone, "scripts/dvc-pull.py", "-r", "gone", ok=False, timeout=300)
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert _outputs_tree(clone) == before

    # incomplete push: the objects of one output (data/tiny/selections) are gone from the remote;
    # chosen by name, since which .dir object sorts first changes with any figure's bytes
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    md5 = next(
        out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] == "data/tiny/selections"
    )
    shutil.rmtree(remote / "files" / "md5" / md5[:2])
    fresh = _clone(project, tmp_path / "fresh")
    partial = _sh(fresh, "scripts/dvc-pull.py", ok=False)
    assert partial.returncode != 0
    assert "dvc-pull: missing " in partial.stderr and "data/tiny/" in partial.stderr, partial.stderr


def test_plots_draw_what_their_titles_say(project: Path) -> None:
    """Item 5: the Vega-Lite specs of `dvc plots show --json`: bits per byte vs steps has one
    line per method (colour = method), the uncertainty plot is a sigma-vs-bpb scatter."""
    shown = json.loads(_sh(project, "dvc", "plots", "show", "--json").stdout)
    specs = {}
    for path, entries in shown["data"].items():
        for entry in entries:
            if entry.get("type") == "vega":
                specs[Path(path).name] = entry["content"]
    steps = specs["bpb_vs_steps.csv"]
    assert "one line per method" in json.dumps(steps["title"])
    mark = steps["mark"]["type"] if isinstance(steps["mark"], dict) else steps["mark"]
    assert mark == "line" and "transform" not in steps, "no smoothing, no loess"
    enc = steps["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"], enc["color"]["field"]) == (
        "steps",
        "bpb_mean",
        "method",
    )
    methods = {row["method"] for row in steps["data"]["values"]}
    assert {"sift", "nn", "nn_f", "us", "random"} <= methods  # base is step 0 of each
    scatter = specs["uncertainty.csv"]
    enc = scatter["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"]) == ("sigma", "bpb")
    smark = scatter["mark"]["type"] if isinstance(scatter["mark"], dict) else scatter["mark"]
    assert smark == "point" and "sigma" in json.dumps(scatter["title"])
