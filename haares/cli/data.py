"""`haares data prepare`: tokenize a dataset once into the shared cache (thin over haares.data.prepare)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

data_app = typer.Typer(help="Datasets: prepare (load, tokenize and cache) a dataset.", no_args_is_help=True)


@data_app.command("prepare")
def prepare_command(
    name: Annotated[str, typer.Argument(help="Dataset name: openwebtext, wikitext103, tinystories, yelp, codesearchnet_python, offline_english, offline_code.")],
    path: Annotated[Optional[str], typer.Option("--path", help="Local file or folder shaped like the hub dataset (instead of the hub).")] = None,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="char (256 ids) or bpe4096.")] = "char",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Context length T, to check the validation split holds a sequence.")] = 512,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Load DATASET (hub or --path), build its tokenizer, and cache its token arrays for every run."""
    from haares.config import DataConfig
    from haares.data import EvalSet, prepare

    prepared = prepare(DataConfig(dataset=name, path=path, tokenizer=tokenizer, seq_len=seq_len), progress=progress)
    evalset = EvalSet(prepared.val, seq_len=seq_len, batch_size=1, eval_tokens=0, tokenizer=prepared.tokenizer)
    meta = prepared.meta
    typer.echo(meta["source"])
    typer.echo(
        f"  train {meta['train_tokens']:,} tokens ({meta['train_docs']:,} docs), "
        f"validation {meta['val_tokens']:,} tokens ({meta['val_docs']:,} docs, {evalset.n_seqs:,} sequences of {seq_len})"
    )
    typer.echo(f"  tokenizer {tokenizer}, vocab {prepared.tokenizer.vocab_size}; fingerprint {prepared.fingerprint}")
    typer.echo(f"  cache {prepared.cache_dir}")

