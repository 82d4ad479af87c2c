"""Our GGUF reader equals gguf-py's on real files, and refuses malformed ones with one clear error."""
import random
import struct
import time

import gguf
import numpy as np
import pytest

from engine.gguf_file import GGUFFile, ModelFileError

from .conftest import WEIGHT_TYPES


def reference_value(field):
    """A ReaderField decoded as the engine always has (strings with U+FFFD for broken UTF-8)."""
    kinds = field.types
    if kinds[0] == gguf.GGUFValueType.ARRAY:
        items = [field.parts[i] for i in field.data]
        if kinds[-1] == gguf.GGUFValueType.STRING:
            return [bytes(x).decode("utf-8", errors="replace") for x in items]
        return [x.item() if x.size == 1 else x.tolist() for x in items]
    value = field.parts[field.data[0]]
    if kinds[0] == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.item() if value.size == 1 else value.tolist()


def assert_same_as_gguf_py(path):
    ours, reader = GGUFFile(path), gguf.GGUFReader(path)
    expected = {name: reference_value(field) for name, field in reader.fields.items()}
    assert list(ours.metadata) == list(expected)
    for key, value in expected.items():
        assert ours.metadata[key] == value and type(ours.metadata[key]) is type(value), key
    assert ours.version == expected["GGUF.version"]
    assert list(ours.tensors) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        info = ours.tensors[t.name]
        assert info.ggml_type == int(t.tensor_type)
        assert info.shape == tuple(int(n) for n in reversed(t.shape.tolist()))
        assert (info.data.dtype, info.data.shape) == (t.data.dtype, t.data.shape), t.name
        assert info.data.tobytes() == t.data.tobytes(), t.name
        assert not info.data.flags.owndata and not info.data.flags.writeable  # a view of the mapped file


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
def test_tiny_files_read_as_gguf_py_reads_them(tiny_gguf_factory, weight_type):
    assert_same_as_gguf_py(tiny_gguf_factory(weight_type))


@pytest.mark.slow
def test_default_model_reads_as_gguf_py_reads_it(default_gguf):
    assert_same_as_gguf_py(default_gguf)


def test_every_tensor_dtype_and_a_custom_alignment(tmp_path):
    path = tmp_path / "zoo.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_custom_alignment(64)
    writer.add_array("test.floats", [0.5, -1.25, 3.0])
    writer.add_array("test.empty", [])
    writer.add_bool("test.flag", True)
    writer.add_string("test.unicode", "naïve 日本語 🤖")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64):
        writer.add_tensor(f"t.{np.dtype(dtype).name}", (rng.standard_normal((3, 5)) * 9).astype(dtype))
    for qtype in ("BF16", "IQ4_NL", "Q4_K"):  # raw bytes, including types the engine cannot decode
        kind = gguf.GGMLQuantizationType[qtype]
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[kind]
        raw = rng.integers(0, 256, (2, 512 // block_elems * block_bytes), dtype=np.uint8)
        writer.add_tensor(f"t.{qtype}", raw, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_same_as_gguf_py(path)
    assert GGUFFile(path).get("general.alignment") == 64
    assert GGUFFile(path).tensors["t.IQ4_NL"].shape == (2, 512)


def test_broken_utf8_in_a_string_value_becomes_replacement_characters(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    data[data.find(b"<unk>")] = 0xFF  # the first vocabulary entry
    path = tmp_path / "broken-utf8.gguf"
    path.write_bytes(bytes(data))
    assert_same_as_gguf_py(path)


# --- malformed files: one ModelFileError naming the file, quickly, never another exception ---

def write(tmp_path, data: bytes, name="bad.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_refused(path, match=None):
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=match) as caught:
        GGUFFile(path)
    assert str(path) in str(caught.value)
    assert time.perf_counter() - start < 2.0


def field_after(data: bytes, key: bytes) -> int:
    """Offset of the value type that follows metadata key `key`."""
    return data.index(key) + len(key)


def test_truncated_anywhere_in_the_first_kilobyte(tmp_path, llama2_gguf):
    data = llama2_gguf.read_bytes()
    for cut in range(0, 1024, 50):
        assert_refused(write(tmp_path, data[:cut], f"cut{cut}.gguf"))


def test_string_length_past_the_end(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    data[24:32] = struct.pack("<Q", 2**60)  # the length of the first metadata key
    assert_refused(write(tmp_path, bytes(data)), "not a readable GGUF file: a metadata key needs")


def test_string_length_in_the_vocabulary_past_the_end(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    first_token = field_after(data, b"tokenizer.ggml.tokens") + 4 + 4 + 8
    data[first_token:first_token + 8] = struct.pack("<Q", 2**60)
    assert_refused(write(tmp_path, bytes(data)), "string 0 of 'tokenizer.ggml.tokens' runs past the end")


def test_absurd_array_count(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    count = field_after(data, b"tokenizer.ggml.scores") + 4 + 4
    data[count:count + 8] = struct.pack("<Q", 2**60)
    assert_refused(write(tmp_path, bytes(data)), "tokenizer.ggml.scores' claims")


def test_absurd_key_and_tensor_counts(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    for offset, what in ((16, "metadata entries"), (8, "tensors")):
        bad = bytearray(data)
        bad[offset:offset + 8] = struct.pack("<Q", 2**60)
        assert_refused(write(tmp_path, bytes(bad), f"count{offset}.gguf"), what)


def test_unknown_value_type(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    kind = field_after(data, b"general.architecture")
    data[kind:kind + 4] = struct.pack("<I", 99)
    assert_refused(write(tmp_path, bytes(data)), "unknown value type 99")


def test_array_of_arrays_is_refused(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    item_type = field_after(data, b"tokenizer.ggml.scores") + 4
    data[item_type:item_type + 4] = struct.pack("<I", 9)
    assert_refused(write(tmp_path, bytes(data)), "unsupported item type 9")


def tensor_info_offset(data: bytes, name: bytes) -> int:
    """Offset just after tensor `name`'s name in the tensor directory."""
    return data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)


def test_tensor_offset_past_the_end(tmp_path, llama2_gguf):
    data = bytearray(llama2_gguf.read_bytes())
    at = tensor_info_offset(data, b"token_embd.weight")
    n_dims = struct.unpack_from("<I", data, at)[0]
    offset_field = at + 4 + 8 * n_dims + 4
    data[offset_field:offset_field + 8] = struct.pack("<Q", len(data))
    assert_refused(write(tmp_path, bytes(data)), "is truncated: tensor 'token_embd.weight'")


def test_bad_tensor_rank_and_type(tmp_path, llama2_gguf):
    data = bytes(llama2_gguf.read_bytes())
    at = tensor_info_offset(data, b"token_embd.weight")
    rank = bytearray(data)
    rank[at:at + 4] = struct.pack("<I", 7)
    assert_refused(write(tmp_path, bytes(rank), "rank.gguf"), "7 dimensions")
    kind = bytearray(data)
    kind_at = at + 4 + 8 * struct.unpack_from("<I", data, at)[0]
    kind[kind_at:kind_at + 4] = struct.pack("<I", 77)
    assert_refused(write(tmp_path, bytes(kind), "type.gguf"), "unknown ggml type 77")


def test_random_corruption_never_escapes_as_another_error(tmp_path, llama2_gguf):
    data = llama2_gguf.read_bytes()
    header_end = tensor_info_offset(data, b"output.weight") + 40
    rng, refused = random.Random(1234), 0
    start = time.perf_counter()
    for trial in range(300):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(8, header_end - 8)
            if rng.random() < 0.5:
                bad[at] = rng.randrange(256)
            else:
                bad[at:at + 8] = struct.pack("<Q", rng.choice([0, 1, 2**31, 2**32 + 7, 2**60, 2**64 - 1]))
        path = write(tmp_path, bytes(bad), f"fuzz{trial % 4}.gguf")
        try:
            GGUFFile(path)
        except ModelFileError:
            refused += 1
    assert refused > 100 and time.perf_counter() - start < 60
