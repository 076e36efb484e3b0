"""packer: many small files -> size-balanced, indexed WebDataset tar shards.

``python -m packer build SRC DST`` is the command line; the same steps are
available as functions for scripts and tests.
"""

__version__ = "0.1.0"

from .build import BuildOptions, BuildReport, build, finalize_build, plan_build, write_planned  # noqa: E402
from .errors import PackerError, UsageError  # noqa: E402
from .index import FORMAT_NAME, FORMAT_VERSION, IndexFormatError, PackedIndex, read_manifest  # noqa: E402
from .names import escape_key, member_name, source_path, split_extension, unescape_key  # noqa: E402
from .plan import assign_balanced, plan_shards, shuffle_order, split_contiguous  # noqa: E402
from .scan import scan_tree  # noqa: E402
from .tarfmt import TarFormatError, TarMember, iter_file_members, iter_members  # noqa: E402
from .units import format_size, parse_size  # noqa: E402
from .resume import resume_build  # noqa: E402
from .verify import verify_dataset  # noqa: E402

__all__ = [
    "__version__",
    "BuildOptions", "BuildReport", "build", "plan_build", "write_planned", "finalize_build", "resume_build",
    "verify_dataset",
    "PackerError", "UsageError", "IndexFormatError",
    "FORMAT_NAME", "FORMAT_VERSION", "PackedIndex", "read_manifest",
    "escape_key", "unescape_key", "member_name", "source_path", "split_extension",
    "plan_shards", "shuffle_order", "assign_balanced", "split_contiguous", "scan_tree",
    "TarFormatError", "TarMember", "iter_members", "iter_file_members",
    "parse_size", "format_size",
]
