"""`audit fetch`: download and verify every encoder and dataset a run needs, where there is internet.

On most clusters only the login nodes reach the internet. `audit fetch` takes a run's own --encoder /
--encoders / --candidates and --data, and on the login node brings each into its cache and checks it:

    hub encoders (SpeechBrain, transformers)  the Hugging Face hub cache (HF_HUB_CACHE, ~/.cache/huggingface/hub)
    EfficientAT release files                 $AUDIT_CACHE/efficientat (SHA-256 checked where pinned: mn04)
    --data fsdd                               $AUDIT_CACHE/fsdd-v1.0.9, every file's SHA-256 checked
    --data hf:NAME                            the datasets cache, and its audio files in the run's cache folder
                                              (OUT/cache, or --cache-dir)

Each encoder is then loaded once (with its padding check), so a corrupt or partial download shows here,
not on the compute node. The run itself then needs no network: `HF_HUB_OFFLINE=1 python -m audit ...`.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from audit.options import AUTO, RunOptions


def needed_encoders(opts: RunOptions) -> tuple:
    """Every encoder a run with `opts` may load: auto's candidates, or the named encoder(s)."""
    from audit.choose import candidates

    return candidates(opts) if opts.encoder == AUTO else opts.encoders


def fetch(opts: RunOptions, say=print) -> list[str]:
    """Brings every encoder and the dataset of `opts` into the caches, verified; returns what it fetched."""
    from audit import encoders

    fetched = []
    if not opts.embeddings:
        for spec in needed_encoders(opts):
            encoder = encoders.resolve(spec)  # downloads once (hub snapshot or release file)
            trial = opts if opts.encoder != AUTO else replace(opts, encoder=spec, candidates=None)  # as choose.py
            encoders.settings(encoder, trial)  # an option this family refuses is a line now, not on the cluster
            with tempfile.TemporaryDirectory() as savedir:
                encoders.load(encoder, trial, Path(savedir))  # the weights load and pass the padding check
            say(f"encoder {spec}: {encoder.family}, {encoder.path}")
            fetched.append(f"encoder {spec}")
    if isinstance(opts.data, str) and opts.data == "fsdd":
        from audit.fsdd import fsdd_files

        files = fsdd_files()
        say(f"data fsdd: {len(files)} files verified in {files[0].parent}")
        fetched.append("data fsdd")
    elif isinstance(opts.data, str):
        from audit import hf_data

        if hf_data.is_hf_input(opts.data):
            if opts.out and Path(opts.cache_dir).is_relative_to(Path(opts.out)):
                from audit.outputs import prepare_out

                prepare_out(Path(opts.out))  # the audio lands in OUT/cache: the run must find an audit folder
            table = hf_data.load_table(opts.data, label_column=opts.label_column, cache_dir=opts.cache_dir)
            say(f"data {opts.data}: {len(table)} clips cached")
            fetched.append(f"data {opts.data}")
        elif not Path(opts.data).exists():
            say(f"data {opts.data}: not found here (a local path: it must be reachable from the compute nodes)")
    return fetched
