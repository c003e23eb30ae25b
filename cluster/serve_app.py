"""The Ray Serve deployment behind `nnps serve`: HTTP routes over cluster/serving.py.

Routes (the Open Inference Protocol v2, as KServe, Triton and Seldon speak it, and a plain one):

    GET  /v2/health/live, /v2/health/ready      {"live": true} / {"ready": true}
    GET  /v2/models/NAME                        the model's metadata: inputs, outputs, version (its step)
    POST /v2/models/NAME/infer                  {"inputs": [{"name", "shape": [m, n_0], "datatype", "data"}]}
    POST /predict                               {"rows": [[...], ...]} or a multipart upload of an image file
    GET  /stats                                 this replica's batch sizes, requests, swaps

Rows from concurrent requests are stacked into one forward pass by `@serve.batch`; each
batch reads the weights once, so every row of it is answered by one checkpoint, whose
step the response carries. Errors are JSON, `{"error": "..."}`, with a 4xx for the
client's faults; the replica goes on serving.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from nnps.cluster import serving
from nnps.cluster.serving import BadRequest, Weights


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def capped_body(request: Request) -> bytes:
    """The request's body, refused with 413 past MAX_BODY. Reads on to twice the cap, so a
    client still sending gets the answer rather than a reset connection."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > 2 * serving.MAX_BODY:
        raise BadRequest(f"request body of {int(declared):,} bytes; at most {serving.MAX_BODY:,}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= serving.MAX_BODY:
            chunks.append(chunk)
        elif size > 2 * serving.MAX_BODY:
            break
    if size > serving.MAX_BODY:
        raise BadRequest(f"request body over {serving.MAX_BODY:,} bytes", status=413)
    return b"".join(chunks)


def json_of(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON ({e})")


@serve.deployment
class Model:
    """One replica: the weights (followed, for a run directory), and a batched forward pass."""

    def __init__(self, target: str, name: str, follow: bool, max_batch_size: int, batch_wait_s: float) -> None:
        first = serving.load_weights(target)
        self.name = name
        self.follower = serving.Follower(target, first) if follow and not target.endswith(".npz") else None
        self.fixed = first
        self.batch_sizes: Counter[int] = Counter()
        self.requests = 0
        self.forward.set_max_batch_size(max_batch_size)
        self.forward.set_batch_wait_timeout_s(batch_wait_s)

    def weights(self) -> Weights:
        return self.follower.current if self.follower else self.fixed

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def forward(self, parts: list[np.ndarray]) -> list[tuple[Weights, np.ndarray]]:
        """One forward pass for the rows of every request in the batch, by one checkpoint."""
        w = self.weights()  # read once: the whole batch is answered by these weights
        self.batch_sizes[len(parts)] += 1
        out = w.forward(np.concatenate(parts))  # (sum of m, n_L)
        ends = np.cumsum([len(p) for p in parts])[:-1]
        return [(w, o) for o in np.split(out, ends)]

    async def __call__(self, request: Request) -> JSONResponse:
        self.requests += 1
        try:
            return await self.route(request)
        except BadRequest as e:
            return error(str(e), e.status)

    async def route(self, request: Request) -> JSONResponse:
        path, method = request.url.path.rstrip("/") or "/", request.method
        model = f"/v2/models/{self.name}"
        if path == "/v2/health/live":
            return JSONResponse({"live": True})
        if path in ("/v2/health/ready", f"{model}/ready"):
            return JSONResponse({"ready": True})
        if path == model and method == "GET":
            return JSONResponse(self.metadata())
        if path == f"{model}/infer" and method == "POST":
            return await self.infer(request)
        if path == "/predict" and method == "POST":
            return await self.predict(request)
        if path == "/stats":
            return JSONResponse(self.stats())
        if path.startswith("/v2/models/"):
            return error(f"no model {path.split('/')[3]!r} here; this serves {self.name!r}", 404)
        return error(f"no route {method} {path}", 404)

    def metadata(self) -> dict[str, Any]:
        w = self.weights()
        return {"name": self.name, "versions": [str(w.step)], "platform": "nnps-numpy",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, w.inputs]}],
                "outputs": self.outputs(w, [-1, w.network.sizes[-1]]),
                "parameters": {"sizes": list(w.network.sizes), "output": w.network.output, "step": w.step,
                               "checkpoint": w.source, "classes": list(w.classes), **self.preprocessing(w)}}  # fmt: skip

    @staticmethod
    def preprocessing(w: Weights) -> dict[str, Any]:
        """How a row in the data's units becomes the network's input (and its output the answer)."""
        if w.table is None:
            return {"preprocessing": "pixels 0-255, divided by 255"}
        return {"preprocessing": "each feature standardized with the training rows' mean and deviation"
                                 + ("; outputs in the targets' units" if w.table.targets else ""),
                "table": w.table.to_meta()}  # fmt: skip

    @staticmethod
    def outputs(w: Weights, shape: list[int], out: np.ndarray | None = None) -> list[dict[str, Any]]:
        """The v2 output tensors (with their data, given `out`): the activations and the class,
        or a regression's values."""
        first = {"name": "values" if w.network.regression else "activations", "datatype": "FP32", "shape": shape}
        tensors = [first] if w.network.regression else [first, {"name": "class", "datatype": "INT64", "shape": shape[:1]}]
        if out is not None:
            first["data"] = out.astype(np.float32).ravel().tolist()
            if len(tensors) > 1:
                tensors[1]["data"] = out.argmax(axis=1).tolist()
        return tensors

    async def infer(self, request: Request) -> JSONResponse:
        body = json_of(await capped_body(request))
        now = self.weights()
        x = serving.tensor_of(body, self.name, now.inputs, pixels=now.table is None)
        w, out = await self.forward(x)
        reply: dict[str, Any] = {"model_name": self.name, "model_version": str(w.step),
                                 "parameters": {"step": w.step, "checkpoint": w.source},
                                 "outputs": self.outputs(w, list(out.shape), out)}  # fmt: skip
        if isinstance(body.get("id"), str):
            reply["id"] = body["id"]
        return JSONResponse(reply)

    async def predict(self, request: Request) -> JSONResponse:
        body = await capped_body(request)
        now = self.weights()
        inputs = now.inputs
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            if now.table is not None:
                raise BadRequest("this network takes rows of a table as JSON, not an image upload", status=415)
            x = await self.uploaded(request, body, inputs, list(now.classes))
        else:
            x = serving.rows_of(json_of(body), inputs, now.table.features if now.table else None)
        w, out = await self.forward(x)
        return JSONResponse({"step": w.step, "checkpoint": w.source, "predictions": serving.answers(w, out)})

    @staticmethod
    async def uploaded(request: Request, body: bytes, inputs: int, classes: list[str]) -> np.ndarray:
        """The one file of a multipart upload, decoded as `nnps predict` decodes an image file."""

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        except Exception as e:  # starlette's MultiPartException and HTTPException: a malformed upload
            raise BadRequest(f"not a readable multipart upload ({e})")
        files = [v for v in form.values() if hasattr(v, "read")]
        if len(files) != 1:
            raise BadRequest("upload one image file (for example: curl -F image=@digit.png URL/predict)")
        return serving.image_rows(await files[0].read(), files[0].filename or "upload", inputs, classes)

    def stats(self) -> dict[str, Any]:
        w = self.weights()
        return {"replica": os.getpid(), "requests": self.requests, "step": w.step, "checkpoint": w.source,
                "swaps": self.follower.swaps if self.follower else 0,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}  # fmt: skip


def app(target: str, name: str, *, follow: bool = True, replicas: int = 1, autoscale: tuple[int, int] | None = None,
        max_batch_size: int = 32, batch_wait_ms: float = 0.0) -> serve.Application:
    """The application `nnps serve` deploys (and a RayService's import path builds)."""
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if autoscale:
        scaling = {"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                          "target_ongoing_requests": max_batch_size}}  # fmt: skip
    deployment = Model.options(name=f"{name}-model", max_ongoing_requests=max(64, 2 * max_batch_size), **scaling)
    return deployment.bind(target, name, follow, max_batch_size, batch_wait_ms / 1000)


def build(args: dict[str, str]) -> serve.Application:
    """For Serve's config files (a RayService's `import_path: nnps.cluster.serve_app:build`):
    args are `target`, and optionally `name`, `replicas`, `max_batch_size`, `batch_wait_ms`."""
    target = args["target"]
    return app(target, args.get("name", "nnps"), replicas=int(args.get("replicas", 1)),
               max_batch_size=int(args.get("max_batch_size", 32)),
               batch_wait_ms=float(args.get("batch_wait_ms", 0.0)))  # fmt: skip
