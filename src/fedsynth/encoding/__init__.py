"""The federated encoding domain shared by every site and every generator."""

from fedsynth.encoding.domain import ColumnDomain, Domain, Modes, merge_summaries, summarize_site

__all__ = ["ColumnDomain", "Domain", "Modes", "merge_summaries", "summarize_site"]
