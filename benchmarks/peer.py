"""The peer in the same run: timm's Mixers on PyTorch, in a venv of their own.

torch and timm never go into the project's environment. `python -m benchmarks.run --peer` uses
`--peer-venv PATH` when given (any venv whose Python imports torch and timm), else creates one on
demand at `DEFAULT_PEER_VENV` and reuses it on later runs. The rows are measured by
`benchmarks/peer_worker.py` in that venv's Python, one request at a time, so that they can be
interleaved with the Keras rows of the same model and batch.

    peer = PeerProcess(ensure_peer_venv(DEFAULT_PEER_VENV))
    row = peer.row("timm_compile", "mixer_s16", batch_size=32, repeats=3)
    seconds = peer.gemm_seconds([((1568, 512), (512, 2048), {}, 10)], "bfloat16", repeats=3)
    peer.close()
"""

import json
import os
import shutil
import subprocess
import sys

DEFAULT_PEER_VENV = os.path.join(os.path.expanduser("~"), ".cache", "keras_mixer", "peer-venv")
# timm imports torchvision, and the torch==2.13.0 CPU wheel these machines serve has no torchvision that
# loads beside it ("operator torchvision::nms does not exist"), so the peer takes the pair that does.
# On x86-64 Linux this torch is the CUDA build (about 5.5 GB in the venv; it runs on the CPU).
PEER_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31")
READY_MARKER = ".keras_mixer_peer_ready"  # written last: a venv without it was cut off and is rebuilt
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_worker.py")


class PeerError(RuntimeError):
    """The peer venv could not be made or used; the message says which and how to fix it."""


def venv_python(venv):
    return os.path.join(venv, "bin", "python")


def ensure_peer_venv(venv, create=True, log=print):
    """The Python of a venv holding torch and timm: `venv` as it is, or built there when `create`."""
    python = venv_python(venv)
    if os.path.exists(os.path.join(venv, READY_MARKER)) or (not create and os.path.exists(python)):
        return python
    if not create:
        raise PeerError(f"--peer-venv {venv!r} has no bin/python; expected a venv with torch and timm")
    if os.path.exists(venv):
        shutil.rmtree(venv)  # an earlier build was cut off before its marker
    log(f"creating the peer venv {venv} ({' '.join(PEER_REQUIREMENTS)}; several GB, a few minutes)")
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise PeerError(f"could not build the peer venv at {venv}: {error}") from error
    with open(os.path.join(venv, READY_MARKER), "w") as marker:
        marker.write(" ".join(PEER_REQUIREMENTS) + "\n")
    return python


# The paper presets timm builds (`timm.list_models("mixer_*_224")` in timm 1.0.31): no H/14.
TIMM_PRESETS = ("mixer_s32", "mixer_s16", "mixer_b32", "mixer_b16", "mixer_l32", "mixer_l16")


def timm_name(preset):
    """timm's name of a paper preset at 224 px: `mixer_s16` -> `mixer_s16_224` (timm has S, B and L)."""
    return f"{preset}_224"


class PeerProcess:
    """One long-lived worker process in the peer venv; `row()` measures one timm row."""

    def __init__(self, python):
        self.process = subprocess.Popen(
            [python, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        hello = self._read()
        if not hello.get("ready"):
            self.close()
            raise PeerError(f"the peer worker in {python} did not start: {hello.get('error', hello)}")
        self.versions = {"torch": hello["torch"], "timm": hello["timm"]}

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            return {"error": "the peer worker exited (does that venv import torch and timm?)"}
        return json.loads(line)

    def _ask(self, request):
        """The worker's answer to one request, or {"error": why} when the worker is gone."""
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except OSError:  # the worker died on an earlier request (out of memory, say)
            return {"error": "the peer worker exited on an earlier row"}
        return self._read()

    def row(self, kind, preset, batch_size, repeats, steps=2):
        """{"row", "batch_size", "images_per_second": [per repeat]} or {"row", "batch_size", "note"}."""
        request = {"row": kind, "model": timm_name(preset), "batch_size": batch_size, "repeats": repeats,
                   "steps": steps}  # fmt: skip
        answer = self._ask(request)
        if "error" in answer:
            return {"row": kind, "batch_size": batch_size, "note": answer["error"][:200]}
        return {"row": kind, "batch_size": batch_size, "rates": [answer["images"] / s for s in answer["seconds"]]}

    def gemm_seconds(self, matmuls, dtype, repeats):
        """{"seconds": [per matmul [per repeat]]} or {"note": why}: torch's time for each (a shape, b shape,
        flags, inner) of `matmuls`, `inner` matmuls per timed call (`benchmarks.run.peer_gemm_limit`)."""
        answer = self._ask({"gemm": [list(m) for m in matmuls], "dtype": dtype, "repeats": repeats})
        if "error" in answer:
            return {"note": answer["error"][:200]}
        return {"seconds": answer["seconds"]}

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
