"""Storage of compressed models: sparse formats, entropy coding, the ``.jcz`` artifact, sizes.

Deep Compression (Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with
Pruning, Trained Quantization and Huffman Coding", ICLR 2016, arXiv:1510.00149, sections 2-4):
relative-index sparse storage with filler zeros, codebooks of shared weights, and Huffman coding of
the index streams; plus ANS coding through ``constriction``. See ``docs/encode.md``.
"""

from jaxcomp.encode._ans import ans_decode
from jaxcomp.encode._ans import ans_encode
from jaxcomp.encode._artifact import FORMAT_VERSION
from jaxcomp.encode._artifact import MAGIC
from jaxcomp.encode._artifact import load
from jaxcomp.encode._artifact import pack
from jaxcomp.encode._artifact import save
from jaxcomp.encode._artifact import unpack
from jaxcomp.encode._coders import CODERS
from jaxcomp.encode._coders import decode_symbols
from jaxcomp.encode._coders import encode_symbols
from jaxcomp.encode._huffman import canonical_codes
from jaxcomp.encode._huffman import huffman_code_lengths
from jaxcomp.encode._huffman import huffman_decode
from jaxcomp.encode._huffman import huffman_encode
from jaxcomp.encode._report import report
from jaxcomp.encode._report import report_markdown
from jaxcomp.encode._sparse import RelativeIndex
from jaxcomp.encode._sparse import default_index_bits
from jaxcomp.encode._sparse import from_relative_index
from jaxcomp.encode._sparse import relative_index
from jaxcomp.encode._stream import CodedStream
from jaxcomp.encode._stream import entropy_bits
from jaxcomp.encode._treedef import register_node

__all__ = [
    "CODERS",
    "FORMAT_VERSION",
    "MAGIC",
    "CodedStream",
    "RelativeIndex",
    "ans_decode",
    "ans_encode",
    "canonical_codes",
    "decode_symbols",
    "default_index_bits",
    "encode_symbols",
    "entropy_bits",
    "from_relative_index",
    "huffman_code_lengths",
    "huffman_decode",
    "huffman_encode",
    "load",
    "pack",
    "register_node",
    "relative_index",
    "report",
    "report_markdown",
    "save",
    "unpack",
]
