"""The streamed pass over a survey stored as parts: in this process or on a Dask cluster.

Pass 1 (``data.stream``) counts patterns and sums; the model's statistics follow from them
(``model.stats``), or from a second pass when the model reads another column.
"""

from __future__ import annotations

from pathlib import Path

from omlbayes.constants import DEFAULT_SEED
from omlbayes.data.ingest import BATCH_ROWS, ColumnMap, load_column_map
from omlbayes.data.stream import StreamedSurvey, list_parts, scan_part, summarise_parts
from omlbayes.errors import InputError
from omlbayes.model.design import CHUNK_ROWS, DesignLayout, GroupedStats
from omlbayes.model.spec import ModelSpec
from omlbayes.model.stats import _sum_stats, design_of, stats_from_patterns, stats_part


def stream_pass(
    data: Path | str,
    spec: ModelSpec,
    *,
    column_map: Path | str | ColumnMap | None = None,
    seed: int = DEFAULT_SEED,
    chunk_rows: int = CHUNK_ROWS,
    batch_rows: int = BATCH_ROWS,
    progress=None,
    from_patterns: bool = True,
) -> tuple[StreamedSurvey, DesignLayout, GroupedStats]:
    """The pass over the parts in this process (one batch of ``batch_rows`` in memory).

    Pass 2 runs only when the model reads a column the counted patterns do not carry
    (or ``from_patterns=False``); see :func:`stats_from_patterns`.
    """
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    parts = list_parts(data)
    summaries = []
    for i, part in enumerate(parts):
        summaries.append(scan_part(part, i, cmap, seed=seed, batch_rows=batch_rows))
        if progress:
            progress(f"pass 1: part {i + 1}/{len(parts)} {part.name}")
    survey = summarise_parts(summaries, str(data))
    layout, groups = design_of(survey, spec)
    total = stats_from_patterns(survey, layout, spec, groups) if from_patterns else None
    if total is not None:
        return survey, layout, total
    for i, part in enumerate(parts):
        stats = stats_part(
            part, cmap, survey, layout, spec, groups, chunk_rows=chunk_rows, batch_rows=batch_rows
        )
        total = stats if total is None else total + stats
        if progress:
            progress(f"pass 2: part {i + 1}/{len(parts)} {part.name}")
    return survey, layout, total


def dask_pass(
    data: Path | str,
    spec: ModelSpec,
    *,
    column_map: Path | str | ColumnMap | None = None,
    seed: int = DEFAULT_SEED,
    scheduler: str | None = None,
    n_workers: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    batch_rows: int = BATCH_ROWS,
    progress=None,
    from_patterns: bool = True,
) -> tuple[StreamedSurvey, DesignLayout, GroupedStats]:
    """The same pass as :func:`stream_pass`, part by part on a Dask cluster.

    A ``LocalCluster`` (one single-threaded worker process per core, at most one per part)
    unless ``scheduler`` gives the address of a running one. The parts are read by the
    workers (their paths must be readable there), each in batches of ``batch_rows``, and
    reduced there: the client receives
    only the summed statistics and the bounded predictive sample, never the rows.
    """
    import logging
    import os

    from distributed import Client, LocalCluster, as_completed

    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    parts = [str(p) for p in list_parts(data)]
    say = progress or (lambda _: None)
    cluster = None
    if scheduler is None:
        workers = n_workers or max(1, min(os.cpu_count() or 1, len(parts)))
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise InputError(
                f"--scheduler {scheduler}: cannot reach the Dask scheduler ({err}); check the "
                "address (tcp://host:8786) and that the scheduler is running"
            ) from None
    try:
        say(f"dask: {len(client.scheduler_info()['workers'])} workers, {len(parts)} parts")
        first = client.map(
            scan_part,
            parts,
            range(len(parts)),
            cmap=cmap,
            seed=seed,
            batch_rows=batch_rows,
            pure=False,
        )
        _follow(first, "pass 1", say, as_completed)
        survey = client.submit(summarise_parts, first, str(data), pure=False).result()
        layout, groups = design_of(survey, spec)
        stats = stats_from_patterns(survey, layout, spec, groups) if from_patterns else None
        if stats is not None:
            return survey, layout, stats
        remote_survey = client.scatter(survey, broadcast=True)
        second = client.map(
            stats_part,
            parts,
            cmap=cmap,
            survey=remote_survey,
            layout=layout,
            spec=spec,
            groups=groups,
            chunk_rows=chunk_rows,
            batch_rows=batch_rows,
            pure=False,
        )
        _follow(second, "pass 2", say, as_completed)
        stats = client.submit(_sum_stats, second, pure=False).result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return survey, layout, stats


def _follow(futures, label: str, say, as_completed) -> None:
    """Progress lines as parts finish; a part's error is raised here (its one line)."""
    for done, future in enumerate(as_completed(futures), start=1):
        future.result()  # re-raises a worker's InputError with its message
        say(f"{label}: {done}/{len(futures)} parts")
