"""timm's Mixer rows, run inside the peer venv (torch + timm only; never imports keras_mixer).

`benchmarks/peer.py` starts this file with the peer venv's Python and sends one JSON request per
line on stdin; each answer is one JSON line on stdout, so the caller can interleave these rows with
its own. A request: {"row": one of ROWS, "model": "mixer_s16_224", "batch_size": 32,
"repeats": 3, "steps": 2}. An answer: {"seconds": [per repeat], "images": images per repeat} or
{"error": "..."}. A GEMM request, {"gemm": [[a shape, b shape, {"transpose_a": ...}, inner], ...],
"dtype": "bfloat16", "repeats": 3}, times torch's matmuls as `benchmarks.run.gemm_limit` times TensorFlow's:
the answer's "seconds" holds, per matmul, the seconds per repeat of `inner` of them back to back.
The training step is the one `benchmarks/run.py` times for Keras (the default run's): AdamW (weight decay
0.05), cross-entropy with label smoothing 0.1, gradients clipped to norm 1.0.
"""

import json
import os
import sys
import time

ROWS = ("timm_eager", "timm_compile", "timm_bfloat16_eager", "timm_bfloat16_compile",
        "timm_train_float32", "timm_train_bfloat16")  # fmt: skip


def _time(function, repeats):
    function()  # warm-up (and compilation for torch.compile)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


class Peer:
    def __init__(self):
        import torch  # noqa: PLC0415

        torch.set_num_threads(os.cpu_count())
        self.torch = torch
        self.models = {}

    def model(self, name, compiled):
        import timm  # noqa: PLC0415

        if name not in self.models:
            self.models[name] = {"eager": timm.create_model(name, pretrained=False).eval()}
        if compiled and "compile" not in self.models[name]:
            self.models[name]["compile"] = self.torch.compile(self.models[name]["eager"])
        return self.models[name]["compile" if compiled else "eager"]

    def inference(self, request):
        torch = self.torch
        model = self.model(request["model"], compiled=request["row"].endswith("compile"))
        images = torch.rand(request["batch_size"], 3, 224, 224) * 255
        bfloat16 = "bfloat16" in request["row"]

        def forward():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                return model(images)

        return {"seconds": _time(forward, request["repeats"]), "images": request["batch_size"]}

    def training(self, request):
        import timm  # noqa: PLC0415

        torch = self.torch
        torch.manual_seed(0)
        model = timm.create_model(request["model"], pretrained=False).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        batch, steps = request["batch_size"], request.get("steps", 2)
        images = torch.rand(batch, 3, 224, 224) * 255
        labels = torch.arange(batch) % 1000
        bfloat16 = request["row"].endswith("bfloat16")

        def train():
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                    loss = loss_fn(model(images), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()

        return {"seconds": _time(train, request["repeats"]), "images": batch * steps}

    def gemm(self, request):
        torch = self.torch
        dtype = getattr(torch, request["dtype"])
        seconds = []
        for a_shape, b_shape, flags, inner in request["gemm"]:
            a, b = torch.randn(*a_shape).to(dtype), torch.randn(*b_shape).to(dtype)
            a = a.t() if flags.get("transpose_a") else a  # a view: torch passes the layout on, as TensorFlow does
            b = b.t() if flags.get("transpose_b") else b

            def run(a=a, b=b, inner=inner):
                for _ in range(inner):
                    torch.mm(a, b)

            seconds.append(_time(run, request["repeats"]))
        return {"seconds": seconds}

    def answer(self, request):
        if "gemm" in request:
            return self.gemm(request)
        if request.get("row") not in ROWS:
            return {"error": f"unknown row {request.get('row')!r} (expected one of {ROWS})"}
        if request["row"].startswith("timm_train"):
            return self.training(request)
        return self.inference(request)


def main():
    import timm  # noqa: PLC0415

    peer = Peer()
    print(json.dumps({"ready": True, "torch": peer.torch.__version__, "timm": timm.__version__}), flush=True)
    for line in sys.stdin:
        try:
            answer = peer.answer(json.loads(line))
        except Exception as error:  # noqa: BLE001  (reported to the caller, which goes on without this row)
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
