"""Run ``open_clip_train`` with terrascribe's architectures registered.

``open_clip_train.main`` only knows open_clip's own configs; this entry point registers ours
(``ts-tiny``...) first, then hands over every argument unchanged::

    python -m terrascribe.models.openclip_train --train-data 'ds/shard-{000000..000003}.tar' \\
        --dataset-type webdataset --train-num-samples 4000 --model ts-tiny --batch-size 64 ...

terrascribe datasets are valid open_clip webdatasets (``KEY.jpg`` + ``KEY.txt``, ``sizes.json``);
``Dataset(path).shard_urls()`` gives the ``--train-data`` pattern.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def _patch_webdataset_eof() -> None:
    """Make open_clip_train's webdataset reader work with webdataset >= 0.2.96.

    Newer webdataset ends every shard with an empty ``{}`` marker that open_clip_train's
    ``group_by_keys_nothrow`` does not expect (``KeyError: 'fname'``; open_clip issue #935,
    webdataset issue #384). Asking ``tar_file_expander`` for no marker restores the old stream.
    """
    import inspect

    import open_clip_train.data as oc_data
    from webdataset.tariterators import tar_file_expander, url_opener

    if "eof_value" not in inspect.signature(tar_file_expander).parameters:
        return  # an old webdataset: nothing to fix

    def tarfile_to_samples_nothrow(src, handler=oc_data.log_and_continue):
        streams = url_opener(src, handler=handler)
        files = tar_file_expander(streams, handler=handler, eof_value=None)
        return oc_data.group_by_keys_nothrow(files, handler=handler)

    oc_data.tarfile_to_samples_nothrow = tarfile_to_samples_nothrow


def main(argv: Sequence[str] | None = None) -> None:
    """Register terrascribe's model configs, then run ``open_clip_train.main.main(argv)``."""
    from open_clip_train.main import main as open_clip_main

    from terrascribe.models import register_architectures

    register_architectures()
    _patch_webdataset_eof()
    open_clip_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
