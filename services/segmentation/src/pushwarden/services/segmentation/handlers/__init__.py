"""The segmentation use cases, one module per area; each gets its unit of work and clock
from the composition root."""
