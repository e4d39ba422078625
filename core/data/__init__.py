"""Dataset formats: the upload validator (torch-free), dataset fetchers and proxy-data readers.

Only the validator is re-exported here, so `import core.data` stays free of torch; import
`core.data.fetch` and `core.proxies.sources` directly.
"""

from core.data.validate import DatasetInfo, DatasetLimits, infer_task, load_npz, validate_npz

__all__ = ["DatasetInfo", "DatasetLimits", "infer_task", "load_npz", "validate_npz"]
