"""Helpers for the trainer tests: a tiny byte-level BPE and a run directory of real shards written with write_shard."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from webtext.train import shard_format
from webtext.train.shard_format import Manifest, ShardInfo

WORDS = ("the cat dog bird sat ran flew over under near a big small red blue green house tree river "
         "quickly slowly and then after before it was very happy sad day night").split()


def synthetic_documents(count: int, seed: int) -> list[str]:
    """Short pseudo-English documents from a small grammar: learnable, deterministic."""
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 10))]
            sentences.append(" ".join(words).capitalize() + ".")
        documents.append(" ".join(sentences))
    return documents


def train_tokenizer(texts: list[str], path: Path, vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return tokenizer


def make_run(run: Path, train_docs: int = 400, val_docs: int = 40, train_shards: int = 2, seed: int = 0,
             tokenizer_vocab: int = 320) -> Manifest:
    """RUN/tokenizer/tokenizer.json and RUN/shards/{train,val}-*.arrow + manifest.json from synthetic text."""
    texts = synthetic_documents(train_docs + val_docs, seed)
    tokenizer_path = run / shard_format.RUN_TOKENIZER
    tokenizer = train_tokenizer(texts, tokenizer_path, tokenizer_vocab)
    eot_id = tokenizer.token_to_id("<|endoftext|>")
    vocab_size = tokenizer.get_vocab_size()
    shard_dir = run / shard_format.RUN_SHARDS
    shard_dir.mkdir(parents=True, exist_ok=True)
    groups = {"train": texts[:train_docs], "val": texts[train_docs:]}
    infos = []
    for split, docs in groups.items():
        parts = np.array_split(np.arange(len(docs)), train_shards if split == "train" else 1)
        for index, members in enumerate(parts):
            encoded = tokenizer.encode_batch([docs[i] for i in members])
            documents = [(f"{split}-{i}", np.append(np.asarray(e.ids), eot_id)) for i, e in zip(members, encoded)]
            name = shard_format.shard_name(split, index)
            stats = shard_format.write_shard(shard_dir / name, documents, shard_format.dtype_for_vocab(vocab_size), eot_id=eot_id)
            infos.append(ShardInfo.from_stats(name, split, stats))
    manifest = Manifest(root=shard_dir, tokenizer_sha256=shard_format.sha256_file(tokenizer_path),
                        vocab_size=vocab_size, eot_id=eot_id, dtype=shard_format.dtype_for_vocab(vocab_size), shards=infos)
    manifest.save()
    return manifest


def flip_token_bytes(path: Path, count: int = 64) -> None:
    """Damage a shard as a bad disk would: invert `count` bytes spread evenly over its token buffer."""
    tokens = shard_format.Shard(path).tokens
    data = bytearray(path.read_bytes())
    start = bytes(data).find(tokens[:32].tobytes())
    assert start >= 0 and bytes(data).count(tokens[:32].tobytes()) == 1, "token buffer not found"
    for offset in np.linspace(start, start + tokens.nbytes - 1, count).astype(int):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def set_manifest_sha256(shard_dir: Path, name: str, sha256: str) -> None:
    """Give one manifest entry another sha256, the shard itself untouched."""
    manifest = Manifest.load(shard_dir)
    manifest.shards = [ShardInfo(**{**info.__dict__, "sha256": sha256}) if info.name == name else info
                       for info in manifest.shards]
    manifest.save()
