"""Summaries of a finished dataset, for people and for machines."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from .index import read_manifest
from .units import format_size


def summarize(root: os.PathLike | str) -> Dict[str, Any]:
    """The facts ``info`` prints, as a JSON-ready dict."""
    manifest = read_manifest(root)
    sizes = [s["num_bytes"] for s in manifest["shards"]]
    counts = [s["num_samples"] for s in manifest["shards"]]
    return {
        "path": str(Path(root)),
        "format": manifest["format"],
        "format_version": manifest["format_version"],
        "created_by": manifest["created_by"],
        "num_samples": manifest["num_samples"],
        "num_members": manifest["num_members"],
        "num_shards": manifest["num_shards"],
        "num_bytes": manifest["num_bytes"],
        "payload_bytes": manifest["payload_bytes"],
        "shard_bytes": {"min": min(sizes), "mean": sum(sizes) / len(sizes), "max": max(sizes), "max_over_min": max(sizes) / max(min(sizes), 1)},
        "shard_samples": {"min": min(counts), "mean": sum(counts) / len(counts), "max": max(counts)},
        "extensions": {e["ext"]: e["count"] for e in manifest["extensions"]},
        "skipped": len(manifest["skipped"]),
        "skipped_by_reason": dict(Counter(s["reason"] for s in manifest["skipped"])),
        "warnings": manifest["warnings"],
        "settings": manifest["settings"],
        "classes": manifest.get("classes"),
        "row_dtypes": manifest.get("row_dtypes", {}),
    }


def format_summary(summary: Dict[str, Any]) -> str:
    sb, ss = summary["shard_bytes"], summary["shard_samples"]
    lines: List[str] = [
        f"dataset      {summary['path']}  ({summary['format']} v{summary['format_version']}, {summary['created_by']})",
        f"samples      {summary['num_samples']:,} ({summary['num_members']:,} files) in {summary['num_shards']:,} shard{'s' if summary['num_shards'] != 1 else ''}",
        f"size         {format_size(summary['num_bytes'])} of shards, {format_size(summary['payload_bytes'])} of file data",
        f"shard bytes  min {format_size(sb['min'])}, mean {format_size(sb['mean'])}, max {format_size(sb['max'])} (max/min {sb['max_over_min']:.3f})",
        f"shard samples min {ss['min']:,}, mean {ss['mean']:,.1f}, max {ss['max']:,}",
        "extensions   " + ", ".join(f"{ext} {n:,}" for ext, n in summary["extensions"].items()),
    ]
    if summary["classes"] is not None:
        shown = ", ".join(summary["classes"][:8]) + (", ..." if len(summary["classes"]) > 8 else "")
        lines.append(f"classes      {len(summary['classes']):,} ({shown})")
    for container, fields in list(summary["row_dtypes"].items())[:5]:
        for ext, dtype in fields.items():
            lines.append(f"row dtypes   {container} .{ext}: {dtype} in the source, stored as float32")
    if len(summary["row_dtypes"]) > 5:
        lines.append(f"row dtypes   ... {len(summary['row_dtypes']) - 5} more containers, listed in index.json")
    if summary["skipped"]:
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in summary["skipped_by_reason"].items())
        lines.append(f"skipped      {summary['skipped']:,} ({reasons}); listed in index.json")
    for warning in summary["warnings"]:
        lines.append(f"warning      {warning}")
    settings = " ".join(f"{k}={v}" for k, v in summary["settings"].items())
    lines.append(f"settings     {settings}")
    return "\n".join(lines)
