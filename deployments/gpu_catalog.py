"""The GPU types and their default public list prices, in USD per GPU-hour.

Sources (AWS, US East, Linux), per GPU = instance price / GPUs in the instance:
- T4, L4, A10G, CPU: EC2 On-Demand pricing, https://aws.amazon.com/ec2/pricing/on-demand/
  (g4dn.xlarge $0.526, g6.xlarge $0.8048, g5.xlarge $1.006, c7i.xlarge $0.1785 per hour).
- A100-80GB: EC2 On-Demand, p4de.24xlarge $40.96 per hour for 8 GPUs.
- H100, H200: EC2 Capacity Blocks for ML pricing, https://aws.amazon.com/ec2/capacityblocks/pricing/
  ("effective accelerator hourly rate": p5.48xlarge $4.916, p5e.48xlarge $5.408).
Prices move; staff add versions in the price book (deployments.prices), per organization if need be.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from deployments.models import GpuType

ON_DEMAND = "AWS EC2 On-Demand, US East, Linux: https://aws.amazon.com/ec2/pricing/on-demand/"
CAPACITY_BLOCKS = "AWS EC2 Capacity Blocks for ML, US East: https://aws.amazon.com/ec2/capacityblocks/pricing/"

GPU_TYPES = [
    ("CPU", 0, "0.1785", f"{ON_DEMAND} (c7i.xlarge, 4 vCPUs)"),
    ("T4", 16, "0.526", f"{ON_DEMAND} (g4dn.xlarge, 1 GPU)"),
    ("L4", 24, "0.8048", f"{ON_DEMAND} (g6.xlarge, 1 GPU)"),
    ("A10G", 24, "1.006", f"{ON_DEMAND} (g5.xlarge, 1 GPU)"),
    ("A100-80GB", 80, "5.12", f"{ON_DEMAND} (p4de.24xlarge $40.96 / 8 GPUs)"),
    ("H100", 80, "4.916", f"{CAPACITY_BLOCKS} (p5.48xlarge, per accelerator)"),
    ("H200", 141, "5.408", f"{CAPACITY_BLOCKS} (p5e.48xlarge, per accelerator)"),
]


def ensure_gpu_types(gpu_type_model: Any = None) -> None:
    """Creates the GPU types that are missing; never overwrites a price staff changed.
    Migrations pass their historical model."""
    gpu_type_model = gpu_type_model or GpuType
    for code, memory, price, source in GPU_TYPES:
        gpu_type_model.objects.get_or_create(
            code=code, defaults={"memory_gb": memory, "default_price_per_hour": Decimal(price), "price_source": source}
        )
