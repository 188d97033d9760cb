"""One GPU's utilisation and memory every 250 ms, for the benchmarks (extract_bench.py, gpu_check.py).

NVML through pynvml, else a `nvidia-smi -lms 250` process; nothing (no samples, source None)
without either, or when `enabled` is false (a CPU run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

SAMPLE_SECONDS = 0.25


def nvml_gpu_id(torch_index: int) -> str:
    """NVML's index or UUID of torch's cuda:N (CUDA_VISIBLE_DEVICES renumbers devices)."""
    visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return visible[torch_index] if torch_index < len(visible) else str(torch_index)


class GpuSampler:
    """Samples (time.perf_counter(), utilisation %, memory used bytes) of torch's cuda:`index`."""

    def __init__(self, index: int = 0, enabled: bool = True):
        self.index = index
        self.enabled = enabled
        self.samples: list[tuple[float, float, int]] = []
        self.source: str | None = None
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "GpuSampler":
        if not self.enabled:
            return self
        gpu = nvml_gpu_id(self.index)
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit() else pynvml.nvmlDeviceGetHandleByUUID(gpu)
            self.source = "pynvml"
            self._thread = threading.Thread(target=self._nvml_loop, args=(pynvml, handle), daemon=True)
        except Exception as error:  # noqa: BLE001 - no pynvml or no NVML: nvidia-smi
            self.problem = f"pynvml: {type(error).__name__}: {error}"
            if shutil.which("nvidia-smi") is None:
                self.problem += "; no nvidia-smi"
                return self
            self.source = "nvidia-smi"
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", gpu,
                 "-lms", str(int(SAMPLE_SECONDS * 1000))],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            self._thread = threading.Thread(target=self._smi_loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
        if self._thread is not None:
            self._thread.join()

    def _nvml_loop(self, pynvml, handle) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            except Exception:  # noqa: BLE001 - a missed sample
                continue
            self.samples.append((time.perf_counter(), float(util), int(used)))

    def _smi_loop(self) -> None:
        for line in self._process.stdout:
            try:
                util, used = (part.strip() for part in line.split(","))
                self.samples.append((time.perf_counter(), float(util), int(float(used)) << 20))
            except ValueError:
                continue

    def busy(self, start: float, end: float) -> dict | None:
        """Mean utilisation and the share of idle (0 %) samples between two perf_counter marks."""
        window = [u for t, u, _ in self.samples if start <= t <= end]
        if self.source is None or not window:
            return None
        return {
            "share": sum(window) / (100.0 * len(window)),
            "idle_sample_share": sum(1 for u in window if u == 0) / len(window),
            "samples": len(window),
            "source": self.source,
        }

    def window(self, start: float, end: float) -> dict:
        """Busy share and memory beyond the reading at `start`, over the samples in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        before = [s for s in self.samples if s[0] <= start]
        result = {"source": self.source, "problem": self.problem, "samples": len(inside), "interval_s": SAMPLE_SECONDS,
                  "busy_share": None, "idle_sample_share": None, "mem_at_start_bytes": None, "mem_peak_bytes": None,
                  "mem_beyond_weights_bytes": None}
        if not inside:
            return result
        base = (before[-1] if before else inside[0])[2]
        busy = self.busy(start, end)
        result.update(
            busy_share=busy["share"],
            idle_sample_share=busy["idle_sample_share"],
            mem_at_start_bytes=base,
            mem_peak_bytes=max(s[2] for s in inside),
            mem_beyond_weights_bytes=max(s[2] for s in inside) - base,
        )
        return result

    def series(self, origin: float) -> list[list]:
        """Every sample as [seconds since origin, utilisation %, MiB used] (for the JSON)."""
        return [[round(t - origin, 3), u, m >> 20] for t, u, m in self.samples]
