import hashlib

from tinyvr.utils.hashing import file_sha256


def test_file_sha256_reads_in_chunks_and_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 41 + b"tail"  # not a multiple of the chunk size
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(path, chunk=1000) == want
    assert file_sha256(str(path)) == want
    path.write_bytes(data[:-1])
    assert file_sha256(path, chunk=1000) != want
