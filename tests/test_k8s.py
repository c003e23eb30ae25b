"""The k8s/ manifests against KubeRay v1.7.0's own CRD schemas, offline.

The schemas are KubeRay's own, kept in tests/data/kuberay-v1.7.0 (its README: source, licence). Besides
JSON-Schema validation (types, enums, required fields), a field the schema does not
declare is an error, as the API server's strict field validation makes it: plain JSON
Schema would let a misspelled field through, since the CRDs do not set
additionalProperties: false.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import typer
import yaml

from nnps.cli.main import app
from nnps.cli.train import config_from_options
from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
SCHEMAS = DATA / "kuberay-v1.7.0"
CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}


@functools.lru_cache(maxsize=None)
def schema_for(kind: str) -> dict:
    crd = yaml.load((SCHEMAS / CRDS[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict, path: str = "") -> Iterator[str]:
    """Paths of keys the structural schema does not declare."""
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None or schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for k, v in value.items():
                    yield from unknown_fields(v, extra, f"{path}.{k}")
            return
        for k, v in value.items():
            if k not in props:
                yield f"{path}.{k}"
            else:
                yield from unknown_fields(v, props[k], f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            yield from unknown_fields(v, schema["items"], f"{path}[{i}]")


def check(doc: dict) -> list[str]:
    schema = schema_for(doc["kind"])
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]  # fmt: skip
    return errors + [f"{p}: unknown field" for p in unknown_fields(doc, schema)]


def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in CRDS:
                docs.append((f"{path.name}:{doc['kind']}", doc))
    return docs


@pytest.mark.parametrize("name,doc", manifests(), ids=[n for n, _ in manifests()])
def test_manifest_matches_kuberay_schema(name: str, doc: dict) -> None:
    assert check(doc) == []
    assert cluster_spec(doc)["authOptions"] == {"mode": "token"}


def cluster_spec(doc: dict) -> dict:
    return {"RayJob": doc["spec"].get("rayClusterSpec"), "RayService": doc["spec"].get("rayClusterConfig")}.get(
        doc["kind"], doc["spec"])


def pod_specs(doc: dict) -> list[dict]:
    spec = cluster_spec(doc)
    return [g["template"]["spec"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]]


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_every_ray_container_has_a_memory_backed_dev_shm(name: str, doc: dict) -> None:
    # Ray's object store and nnps's one-node step file live in /dev/shm, 64 MB in a container by default.
    for pod in pod_specs(doc):
        memory = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
        for container in pod["containers"]:
            assert any(m["mountPath"] == "/dev/shm" and m["name"] in memory for m in container["volumeMounts"]), name


def test_both_kinds_are_present() -> None:
    assert sorted({d["kind"] for _, d in manifests()}) == ["RayCluster", "RayJob", "RayService"]


def test_the_checker_catches_misspelled_and_misplaced_fields() -> None:
    doc = yaml.safe_load((K8S / "raycluster.yaml").read_text())
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # misspelled
    doc["spec"]["headGroupSpec"]["shutdownAfterJobFinishes"] = True  # a RayJob field, misplaced
    doc["spec"]["authOptions"]["mode"] = "password"  # not in the enum
    errors = check(doc)
    assert ".spec.workerGroupSpecs[0].maxReplica: unknown field" in errors
    assert ".spec.headGroupSpec.shutdownAfterJobFinishes: unknown field" in errors
    assert any(e.startswith("spec.authOptions.mode: 'password' is not one of") for e in errors)


def rayjob() -> dict:
    return yaml.safe_load((K8S / "rayjob.yaml").read_text())


def parse_train(entrypoint: str):  # type: ignore[no-untyped-def]
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["nnps", "train"], argv
    train_cmd = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return train_cmd.make_context("nnps train", argv[2:]).params


def test_rayjob_entrypoint_parses_with_the_real_cli() -> None:
    job = rayjob()
    params = parse_train(job["spec"]["entrypoint"])
    config = config_from_options(params)
    assert (config.data, config.hidden, config.workers, config.epochs) == ("fashion-mnist", (500, 300), 8, 40)
    assert params["run_dir"].startswith("/runs/") and params["log_progress"] is True
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0


def test_a_renamed_flag_in_the_entrypoint_fails() -> None:
    entry = rayjob()["spec"]["entrypoint"].replace("--batch-size", "--batchsize")
    with pytest.raises(Exception, match=r"No such option: --batchsize"):
        parse_train(entry)


def test_image_matches_the_pinned_ray() -> None:
    import ray

    base = re.search(r"^FROM rayproject/ray:(\S+)", (K8S / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).startswith(f"{ray.__version__}-")
    for name in ("raycluster.yaml", "rayjob.yaml", "rayservice.yaml"):
        assert cluster_spec(yaml.safe_load((K8S / name).read_text()))["rayVersion"] == ray.__version__


def test_rayservice_serve_config_is_valid_for_ray_serve_and_builds_nnps_app() -> None:
    import importlib

    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((K8S / "rayservice.yaml").read_text())
    config = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    (served,) = config.applications
    module, _, attr = served.import_path.partition(":")
    deployment = getattr(importlib.import_module(module), attr)(served.args)._bound_deployment
    assert deployment.init_args == ("/runs/fashion-500-300", "fashion", True, 32, 0.0)
    assert deployment.num_replicas == 2 and deployment.name == "fashion-model"
