"""deploy/: the Kubernetes Indexed Job and the shard script it (and the ssh recipe) runs. Kubernetes cannot run
here: the manifest is checked for what would break it (its shards, its volumes, its script), and the script is
run for real, one process per shard, its output cut and merged exactly as the manifest's comments say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from dialout.config import load_config
from tests.servers import REPO, ControllerProcess, write_config

DEPLOY = REPO / "deploy"
MARKER = "--- dialout shard json ---"


def job() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "k8s" / "fleet-job.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_the_job_runs_one_shard_per_index() -> None:
    manifest = job()
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed"
    [container] = spec["template"]["spec"]["containers"]
    env = {entry["name"]: entry["value"] for entry in container["env"]}
    assert int(env["SHARDS"]) == spec["completions"] == spec["parallelism"]
    assert container["command"] == ["/dialout/deploy/fleet-shard.sh"]
    assert os.access(DEPLOY / "fleet-shard.sh", os.X_OK)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_every_mount_has_its_volume_and_the_names_match_the_instructions() -> None:
    spec = job()["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = [
        mount for container in (*spec["initContainers"], *spec["containers"]) for mount in container["volumeMounts"]
    ]
    assert {mount["name"] for mount in mounts} == set(volumes)
    text = (DEPLOY / "k8s" / "fleet-job.yaml").read_text(encoding="utf-8")
    assert f"create secret generic {volumes['secret']['secret']['secretName']} " in text
    assert f"create configmap {volumes['config']['configMap']['name']} " in text
    [switch] = spec["containers"]
    config_dir = next(mount["mountPath"] for mount in switch["volumeMounts"] if mount["name"] == "config")
    assert {entry["name"]: entry["value"] for entry in switch["env"]}["CONFIG"] == f"{config_dir}/config.yaml"


def test_the_pods_config_is_valid_and_keeps_its_certificates_where_the_job_puts_them() -> None:
    cfg = load_config(DEPLOY / "k8s" / "config.yaml")
    spec = job()["spec"]["template"]["spec"]
    [switch] = spec["containers"]
    certs = next(mount["mountPath"] for mount in switch["volumeMounts"] if mount["name"] == "certs")
    assert cfg.switch.certs_dir == Path(certs)
    assert cfg.scenario("fleet").kind.mode == "fleet"


def test_the_shard_script_runs_shards_whose_json_merges_into_the_fleet(tmp_path: Path) -> None:
    """What each pod (or ssh host) runs, run here as two processes against one controller; the JSON cut from
    their output as the instructions say; the merge is the fleet's."""
    config = write_config(
        tmp_path,
        controller="  switches: [switch-1, 'fleet-*']\n",
        extra="  fleet:\n    fleet: {switches: 12, pings: 2, interval_s: 0.2}\n",
    )
    with ControllerProcess.start(config) as controller:
        config.write_text(config.read_text().replace("https://127.0.0.1:8443", controller.url))
        shards = []
        for index in range(2):
            env = {
                **os.environ,
                "JOB_COMPLETION_INDEX": str(index),
                "SHARDS": "2",
                "CONFIG": str(config),
                "PYTHON": sys.executable,
            }
            shards.append(
                subprocess.Popen(
                    ["sh", str(DEPLOY / "fleet-shard.sh")],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [shard.communicate(timeout=120) for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], "\n".join(err for _, err in outputs)
    files = []
    for index, (out, err) in enumerate(outputs):
        cut = subprocess.run(
            ["awk", f"seen; /^{MARKER}$/ {{seen = 1}}"], input=err + out, capture_output=True, text=True
        )
        path = tmp_path / f"shard-{index}.json"
        path.write_text(cut.stdout)
        files.append(str(path))
    merged = subprocess.run(
        [sys.executable, "-m", "sim_switch", "merge", *files, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert merged.returncode == 0, merged.stderr
    report = json.loads(merged.stdout)
    assert (report["switches"], report["sent"], report["answered_ok"]) == (12, 24, 24)
    assert report["shards"] == ["0/2", "1/2"]


def test_the_shard_script_says_what_is_missing() -> None:
    done = subprocess.run(
        ["sh", str(DEPLOY / "fleet-shard.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "SHARDS": "2"},
        timeout=30,
    )
    assert done.returncode != 0
    assert "set SHARD_INDEX or JOB_COMPLETION_INDEX" in done.stderr
