"""Model FLOPs utilisation: achieved FLOP/s over the device's peak."""

import jax


# Dense bf16 peak FLOP/s per JAX device (no sparsity), by `device_kind`, from the
# vendors' data sheets. A TPU v2/v3 JAX device is one core (half a chip); v4 and
# later present one device per chip (megacore). Matching is by substring, longest
# key first, case-insensitive.
PEAK_FLOPS_BF16 = {
    'TPU v2': 22.5e12,
    'TPU v3': 61.5e12,
    'TPU v4': 275e12,
    'TPU v4 lite': 137.5e12,  # v4i
    'TPU v5 lite': 197e12,    # v5e
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
    'TPU v5': 459e12,         # v5p reports 'TPU v5'
    'TPU v6 lite': 918e12,    # Trillium (v6e)
    'TPU v6e': 918e12,
    'TPU7x': 2307e12,         # Ironwood, per chip
    'H100': 989e12,           # SXM; PCIe parts are lower
    'H100 PCIe': 756e12,
    'H200': 989e12,
    'GH200': 989e12,
    'H20': 148e12,
    'B200': 2250e12,
    'GB200': 2500e12,
    'A100': 312e12,
    'A10G': 70e12,  # 'NVIDIA A10G' (AWS); tensor-core dense bf16 ~ 70 TFLOP/s
    'L4': 121e12,
    'L40S': 362e12,
    'V100': 125e12,  # fp16 tensor cores (no bf16)
}


def peak_flops_per_device(config_value: float = 0.0, device_kind: str | None = None) -> float:
  """Peak FLOP/s of one device for MFU: the config value if positive, else the
  table entry for `device_kind` (default: that of jax.devices()[0]), else 0
  (unknown, e.g. CPU: MFU is then not logged)."""
  if config_value and config_value > 0:
    return float(config_value)
  kind = (device_kind if device_kind is not None else jax.devices()[0].device_kind).lower()
  for key in sorted(PEAK_FLOPS_BF16, key=len, reverse=True):
    if key.lower() in kind:
      return PEAK_FLOPS_BF16[key]
  return 0.0


def mfu(flops_per_device_step: float, steps: int, seconds: float, peak: float) -> float:
  """Model FLOPs utilization: achieved / peak, both per device.
  flops_per_device_step is `bltdiff.flops.count` of the train step divided by
  the devices it is split over (remat would count its recomputation too)."""
  if not (flops_per_device_step and peak and seconds > 0):
    return 0.0
  return steps * flops_per_device_step / seconds / peak
