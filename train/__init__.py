"""webtext.train: the GPT-2 model, shard loader, training loop, checkpoints, sampling and HF conversion.

Importing this package is cheap; `webtext.train.shards` needs only numpy and pyarrow (no torch).
"""
