#!/usr/bin/env python3
"""export_diffusers.py on a CUDA device: float16 and float32 exports that load
and run there. Needs a GPU, so it is not part of the suite (which has none to
offer and must not skip); scripts/gpu_check.sh runs it on the GPU machine.

    python3 tools/export/test_export_diffusers_cuda.py

Exits 2, having run nothing, where torch sees no CUDA device.
"""
import os
import sys
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_diffusers as ed  # noqa: E402
from test_export_diffusers import ExportTestCase  # noqa: E402


class CudaPrecisionTest(ExportTestCase):
    def test_float16_and_float32_on_cuda(self):
        for dtype in ("float16", "float32"):
            with self.subTest(dtype=dtype):
                path = self.export(name=f"cuda-{dtype}", dtype=dtype, device="cuda")
                model = torch.jit.load(os.path.join(path, "model.pt"), map_location="cuda")
                x = torch.randn(3, 4, 8, 8, device="cuda", dtype=ed.DTYPES[dtype])
                t = torch.tensor([1, 500, 999], device="cuda")
                c = torch.randn(3, 77, 32, device="cuda", dtype=ed.DTYPES[dtype])
                out = model(x, t, c)
                self.assertEqual(out.dtype, ed.DTYPES[dtype])
                self.assertTrue(torch.isfinite(out).all())
                print(f"\n{dtype} on cuda:\n{self.last_output}", file=sys.stderr)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("test_export_diffusers_cuda: torch sees no CUDA device; run it on a GPU machine "
              "(scripts/gpu_check.sh does)", file=sys.stderr)
        sys.exit(2)
    unittest.main()
