"""The architectures pinned against the reference code, layer by layer.

Each reference below is transcribed from the code (or table) it cites, as a function of the same
constructor arguments the reference takes, and expanded with the reference's own block definitions.
The built modules are read back in forward order (torch.fx: every layer with its kernel, stride,
padding and widths; every activation with its slope; every upsampling with its mode) and compared
with the transcription; parameter counts are computed from the transcription independently.

References (commits as fetched):
- [CGL] pfnet-research/chainer-gan-lib @ cf9efba5, common/net.py: DCGANGenerator, SNDCGANDiscriminator
  (the authors' standard-CNN code; example.sh trains `--architecture sndcgan`). chainer's
  F.leaky_relu defaults to slope 0.2; initializers.Normal(0.02).
- [SNP] pfnet-research/sngan_projection @ e84b1a5f: gen_models/resnet_32.py, resnet_64.py,
  gen_models/resblocks.py; dis_models/snresnet_32.py, snresnet_64.py, dis_models/resblocks.py
  (the authors' ResNet code; configs/sn_cifar10_unconditional.yml builds the 32 px pair).
- [MIM] kwotsin/mimicry @ a7fda06c: torch_mimicry/nets/sngan/sngan_32.py, sngan_48.py, sngan_64.py,
  torch_mimicry/modules/resblocks.py (GBlock upsamples bilinearly, align_corners=False).
- [PGC] w86763777/pytorch-gan-collections @ 860e90bd, source/models/sngan.py: Discriminator(M), a
  PyTorch port with the authors' widths and N(0, 0.02) init but LeakyReLU 0.1.
- [PAPER] Miyato et al. 2018, arXiv:1802.05957, Appendix B.4: Table 3 (standard CNN, LeakyReLU 0.1),
  Table 4 (ResNet, CIFAR-10), Table 5 (ResNet, STL-10).
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from sngan.models import build_discriminator, build_generator
from sngan.diagnostics.monitor import layer_input_sizes
from sngan.spectral import VARIANTS, apply_spectral_norm, is_normalized

Z = 128  # n_hidden / dim_z / nz in every reference


# ----------------------------------------------------------------------------- reading the built modules

def read_back(model: nn.Module) -> list[tuple]:
    """The model's layers and activations in forward order, traced with torch.fx."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    seq: list[tuple] = []
    for node in graph.nodes:
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                kind = "deconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
                seq.append((kind, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]))
            elif isinstance(m, nn.Linear):
                seq.append(("linear", m.in_features, m.out_features, m.bias is not None))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                seq.append(("bn", m.num_features))
        elif node.op == "call_function" and node.target is F.leaky_relu:
            seq.append(("lrelu", node.args[1] if len(node.args) > 1 else node.kwargs["negative_slope"]))
        elif node.op == "call_function" and node.target is F.interpolate:
            seq.append(("up", node.kwargs["mode"]))
    return seq


def layers(seq: list[tuple]) -> list[tuple]:
    return [op for op in seq if op[0] in ("conv", "deconv", "linear", "bn")]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count(reference: list[tuple]) -> int:
    """Parameters of a transcribed layer list: weights, biases, BN's gamma and beta."""
    total = 0
    for op in reference:
        if op[0] in ("conv", "deconv"):
            _, cin, cout, k, _, _ = op
            total += cin * cout * k * k + cout
        elif op[0] == "linear":
            _, fin, fout, bias = op
            total += fin * fout + (fout if bias else 0)
        elif op[0] == "bn":
            total += 2 * op[1]
    return total


# ----------------------------------------------------------------------------- [CGL] and [PAPER] Table 3

def cgl_dcgan_generator(bottom_width: int = 4, ch: int = 512) -> list[tuple]:
    """[CGL] DCGANGenerator.__init__/__call__ with use_bn=True, in call order (l0, bn0, dc1, bn1, ...).
    dc4 is `Deconvolution2D(ch // 8, 3, 3, 1, 1)`: a 3x3 stride-1 pad-1 deconvolution is a convolution
    with the kernel flipped and transposed (the same function class and parameter count); Table 3 calls
    it "3x3, stride=1 conv", and so does ours."""
    return [("linear", Z, bottom_width * bottom_width * ch, True), ("bn", bottom_width * bottom_width * ch),
            ("deconv", ch, ch // 2, 4, 2, 1), ("bn", ch // 2),
            ("deconv", ch // 2, ch // 4, 4, 2, 1), ("bn", ch // 4),
            ("deconv", ch // 4, ch // 8, 4, 2, 1), ("bn", ch // 8),
            ("conv", ch // 8, 3, 3, 1, 1)]


def cgl_sndcgan_discriminator(bottom_width: int = 4, ch: int = 512) -> list[tuple]:
    """[CGL] SNDCGANDiscriminator: c0_0 .. c3_0 then l4, each conv followed by F.leaky_relu (slope 0.2)."""
    convs = [(3, ch // 8, 3, 1, 1), (ch // 8, ch // 4, 4, 2, 1), (ch // 4, ch // 4, 3, 1, 1),
             (ch // 4, ch // 2, 4, 2, 1), (ch // 2, ch // 2, 3, 1, 1), (ch // 2, ch // 1, 4, 2, 1),
             (ch // 1, ch // 1, 3, 1, 1)]
    seq = []
    for conv in convs:
        seq += [("conv", *conv), ("lrelu", 0.2)]
    return seq + [("linear", bottom_width * bottom_width * ch, 1, True)]


def paper_table3_discriminator(M: int = 32) -> list[tuple]:
    """[PAPER] Table 3(b), M = 32 (CIFAR-10) or 48 (STL-10): every conv followed by lReLU 0.1, dense -> 1."""
    rows = [(3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256), (4, 2, 256), (3, 1, 512)]
    seq, cin = [], 3
    for k, s, cout in rows:
        seq += [("conv", cin, cout, k, s, 1), ("lrelu", 0.1)]
        cin = cout
    return seq + [("linear", (M // 8) ** 2 * 512, 1, True)]


def pgc_discriminator(M: int = 32) -> list[tuple]:
    """[PGC] Discriminator(M).main: nn.Sequential of convs, each followed by nn.LeakyReLU(0.1), then
    Linear(M // 8 * M // 8 * 512, 1)."""
    convs = [(3, 64, 3, 1, 1), (64, 128, 4, 2, 1), (128, 128, 3, 1, 1), (128, 256, 4, 2, 1), (256, 256, 3, 1, 1),
             (256, 512, 4, 2, 1), (512, 512, 3, 1, 1)]
    seq = []
    for conv in convs:
        seq += [("conv", *conv), ("lrelu", 0.1)]
    return seq + [("linear", M // 8 * M // 8 * 512, 1, True)]


@pytest.mark.parametrize("resolution,bottom", [(32, 4), (48, 6)])
def test_cnn_generator_is_the_authors_dcgan_generator(resolution, bottom):
    for layout in ("paper_table", "authors"):
        G = build_generator("cnn", resolution=resolution, g_ch=512, layout=layout)
        reference = cgl_dcgan_generator(bottom_width=bottom)
        assert layers(read_back(G)) == reference
        assert n_params(G) == count(reference)
    assert count(cgl_dcgan_generator(4)) == 3_828_739


@pytest.mark.parametrize("resolution,bottom", [(32, 4), (48, 6)])
def test_cnn_discriminator_layouts(resolution, bottom):
    paper = build_discriminator("cnn", resolution=resolution, d_ch=64)
    assert read_back(paper) == paper_table3_discriminator(M=resolution)
    assert n_params(paper) == count(paper_table3_discriminator(M=resolution))
    authors = build_discriminator("cnn", resolution=resolution, d_ch=64, layout="authors")
    assert read_back(authors) == cgl_sndcgan_discriminator(bottom_width=bottom, ch=512)
    assert n_params(authors) == count(cgl_sndcgan_discriminator(bottom_width=bottom))


def test_the_pytorch_port_is_the_authors_layout_with_slope_0_1():
    for resolution in (32, 48):
        D = build_discriminator("cnn", resolution=resolution, d_ch=64, layout="authors", leaky_slope=0.1)
        assert read_back(D) == pgc_discriminator(M=resolution)
    assert count(pgc_discriminator(32)) == count(cgl_sndcgan_discriminator(4)) == 5_860_865


def test_cnn_parameter_counts_at_32():
    assert n_params(build_discriminator("cnn", resolution=32, d_ch=64)) == 2_935_873
    assert n_params(build_discriminator("cnn", resolution=32, d_ch=64, layout="authors")) == 5_860_865
    assert n_params(build_generator("cnn", resolution=32, g_ch=512, layout="authors")) == 3_828_739


def test_slope_and_init_are_keys_of_their_own():
    D = build_discriminator("cnn", resolution=32, d_ch=64, layout="authors", leaky_slope=0.1, init="xavier")
    assert {op[1] for op in read_back(D) if op[0] == "lrelu"} == {0.1}
    assert layers(read_back(D)) == layers(cgl_sndcgan_discriminator())  # the widths stay the authors'
    paper = build_discriminator("cnn", resolution=32, d_ch=64, leaky_slope=0.2)
    assert {op[1] for op in read_back(paper) if op[0] == "lrelu"} == {0.2}
    # and the slope is what the forward applies: conv2's input is leaky_relu(conv1's output, slope)
    seen = {}
    D.conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("out1", o))
    D.conv2.register_forward_pre_hook(lambda m, i: seen.__setitem__("in2", i[0]))
    D(torch.randn(2, 3, 32, 32))
    assert torch.equal(seen["in2"], F.leaky_relu(seen["out1"], 0.1)) and (seen["out1"] < 0).any()


def test_initializations():
    torch.manual_seed(0)
    authors = build_discriminator("cnn", resolution=32, d_ch=64, layout="authors")
    G = build_generator("cnn", resolution=32, g_ch=512, layout="authors")
    for layer in (authors.conv7, authors.fc, G.fc, G.blocks[0].deconv):  # [CGL]: initializers.Normal(0.02)
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.02) and abs(layer.weight.mean()) < 1e-3
        assert torch.count_nonzero(layer.bias) == 0
    paper = build_discriminator("cnn", resolution=32, d_ch=64)  # xavier_uniform_: bound sqrt(6 / (fan_in + fan_out))
    bound = (6 / (512 * 9 + 256 * 9)) ** 0.5
    assert bound / 1.01 < paper.conv7.weight.abs().max() <= bound
    normal = build_discriminator("resnet", resolution=32, d_ch=16, init="normal")
    assert normal.blocks[1].conv1.weight.std().item() == pytest.approx(0.02, rel=0.1)


# ----------------------------------------------------------------------------- [SNP], [MIM], [PAPER] Tables 4, 5

def g_block(cin: int, cout: int, mode: str) -> list[tuple]:
    """[SNP] gen_models/resblocks.py Block(upsample=True) (= [MIM] GBlock): b1, act, up, c1, b2, act, c2;
    shortcut up, c_sc (learnable: upsample is True). hidden_channels = out_channels."""
    return [("bn", cin), ("up", mode), ("conv", cin, cout, 3, 1, 1), ("bn", cout), ("conv", cout, cout, 3, 1, 1),
            ("up", mode), ("conv", cin, cout, 1, 1, 0)]


def d_block(cin: int, cout: int, downsample: bool) -> list[tuple]:
    """[SNP] dis_models/resblocks.py Block (= [MIM] DBlock): c1 (in -> hidden = in), c2 (hidden -> out),
    c_sc 1x1 when in != out or downsample."""
    seq = [("conv", cin, cin, 3, 1, 1), ("conv", cin, cout, 3, 1, 1)]
    return seq + ([("conv", cin, cout, 1, 1, 0)] if cin != cout or downsample else [])


def optimized_block(cin: int, cout: int) -> list[tuple]:
    """[SNP] OptimizedBlock (= [MIM] DBlockOptimized): c1 (in -> out), c2 (out -> out), c_sc 1x1 (in -> out)."""
    return [("conv", cin, cout, 3, 1, 1), ("conv", cout, cout, 3, 1, 1), ("conv", cin, cout, 1, 1, 0)]


def resnet_generator(bottom: int, widths: list[int], mode: str) -> list[tuple]:
    """l1 Linear(dim_z, bottom^2 * widths[0]); Blocks widths[i] -> widths[i+1]; BN; act; 3x3 conv to RGB."""
    seq = [("linear", Z, bottom * bottom * widths[0], True)]
    for cin, cout in zip(widths, widths[1:]):
        seq += g_block(cin, cout, mode)
    return seq + [("bn", widths[-1]), ("conv", widths[-1], 3, 3, 1, 1)]


def resnet_discriminator(first: int, blocks: list[tuple[int, int, bool]], fc_bias: bool) -> list[tuple]:
    seq = optimized_block(3, first)
    for cin, cout, down in blocks:
        seq += d_block(cin, cout, down)
    return seq + [("linear", blocks[-1][1], 1, fc_bias)]


def snp_resnet_32(ch_g: int = 256, ch_d: int = 128) -> tuple[list, list]:
    """[SNP] resnet_32.ResNetGenerator(ch=256, bottom_width=4): block2..4 Block(ch, ch, upsample=True);
    snresnet_32.SNResNetProjectionDiscriminator(ch=128): block1 OptimizedBlock(3, ch), block2 Block(ch, ch,
    downsample=True), block3/4 Block(ch, ch), l5 SNLinear(ch, 1, nobias=True)."""
    return (resnet_generator(4, [ch_g] * 4, "nearest"),
            resnet_discriminator(ch_d, [(ch_d, ch_d, True), (ch_d, ch_d, False), (ch_d, ch_d, False)], False))


def snp_resnet_64(ch: int = 64) -> tuple[list, list]:
    """[SNP] resnet_64.ResNetGenerator(ch=64): l1 to 4x4x(ch*16), Blocks ch*16 -> 8 -> 4 -> 2 -> 1;
    snresnet_64 (ch=64): OptimizedBlock(3, ch), Block(ch, 2ch, down) .. Block(8ch, 16ch, down),
    l6 SNLinear(16ch, 1) (with bias)."""
    return (resnet_generator(4, [ch * 16, ch * 8, ch * 4, ch * 2, ch], "nearest"),
            resnet_discriminator(ch, [(ch, 2 * ch, True), (2 * ch, 4 * ch, True), (4 * ch, 8 * ch, True),
                                      (8 * ch, 16 * ch, True)], True))


def mimicry_sngan_48(ngf: int = 512, ndf: int = 1024) -> tuple[list, list]:
    """[MIM] sngan_48: G bottom_width 6, GBlock(ngf, ngf>>1) .. (ngf>>2, ngf>>3), b5, c5; D DBlockOptimized(3,
    ndf>>4), DBlock(ndf>>4, ndf>>3, down), (ndf>>3, ndf>>2, down), (ndf>>2, ndf>>1, down),
    DBlock(ndf>>1, ndf, downsample=False), l5 SNLinear(ndf, 1)."""
    return (resnet_generator(6, [ngf, ngf >> 1, ngf >> 2, ngf >> 3], "bilinear"),
            resnet_discriminator(ndf >> 4, [(ndf >> 4, ndf >> 3, True), (ndf >> 3, ndf >> 2, True),
                                            (ndf >> 2, ndf >> 1, True), (ndf >> 1, ndf, False)], True))


def mimicry_sngan_64(ngf: int = 1024, ndf: int = 1024) -> tuple[list, list]:
    """[MIM] sngan_64: G bottom 4, GBlock(ngf, ngf>>1) .. (ngf>>3, ngf>>4); D DBlockOptimized(3, ndf>>4),
    DBlock(ndf>>4, ndf>>3, down) .. DBlock(ndf>>1, ndf, down), l6 SNLinear(ndf, 1)."""
    return (resnet_generator(4, [ngf >> i for i in range(5)], "bilinear"),
            resnet_discriminator(ndf >> 4, [(ndf >> i, ndf >> (i - 1), True) for i in (4, 3, 2, 1)], True))


def up_modes(seq):
    return [op for op in seq if op[0] == "up"]


def check(G, D, reference_g, reference_d, g_count=None, d_count=None):
    """Layers, upsampling modes and parameter counts of G and D against a transcription."""
    g_seq = read_back(G)
    assert layers(g_seq) == layers(reference_g)
    assert up_modes(g_seq) == up_modes(reference_g)
    assert layers(read_back(D)) == layers(reference_d)
    assert not [op for op in read_back(D) if op[0] == "lrelu"]  # ReLU only
    assert (n_params(G), n_params(D)) == (count(reference_g), count(reference_d))
    if g_count is not None:
        assert (n_params(G), n_params(D)) == (g_count, d_count)


def test_resnet_32_is_table_4_and_the_authors_code():
    ref_g, ref_d = snp_resnet_32()
    authors = (build_generator("resnet", resolution=32, g_ch=256, layout="authors"),
               build_discriminator("resnet", resolution=32, d_ch=128, layout="authors"))
    check(*authors, ref_g, ref_d, 4_276_739, 1_053_824)  # the released D's final Linear has no bias
    # paper_table: Table 4 with a biased Linear (as Mimicry's sngan_32), the models measured so far
    paper = (build_generator("resnet", resolution=32, g_ch=256), build_discriminator("resnet", resolution=32, d_ch=128))
    check(*paper, ref_g, ref_d[:-1] + [("linear", 128, 1, True)], 4_276_739, 1_053_825)


def test_resnet_48_is_table_5_and_mimicry_sngan_48():
    ref_g, ref_d = mimicry_sngan_48()
    for layout in ("paper_table", "authors"):
        G = build_generator("resnet", resolution=48, g_ch=512, layout=layout, upsample="bilinear")
        D = build_discriminator("resnet", resolution=48, d_ch=64, layout=layout)
        check(G, D, ref_g, ref_d)
    # [PAPER] Table 5: G dense 6x6x512, ResBlock up 256, 128, 64; D ResBlock down 64, 128, 256, 512, ResBlock 1024
    assert [op[2] for op in layers(read_back(G)) if op[0] == "conv" and op[3] == 1] == [256, 128, 64]
    assert [b.conv2.out_channels for b in D.blocks] == [64, 128, 256, 512, 1024]
    assert D(torch.zeros(1, 3, 48, 48)).shape == (1,) and D.blocks[-1].shortcut is not None
    nearest = build_generator("resnet", resolution=48, g_ch=512)  # the authors' Chainer blocks: unpooling
    assert up_modes(read_back(nearest)) == [("up", "nearest")] * 6


def test_resnet_64_authors_is_snresnet_64_and_mimicry_sngan_64():
    ref_g, ref_d = mimicry_sngan_64()
    G = build_generator("resnet", resolution=64, g_ch=1024, layout="authors", upsample="bilinear")
    D = build_discriminator("resnet", resolution=64, d_ch=64, layout="authors")
    check(G, D, ref_g, ref_d)
    snp_g, snp_d = snp_resnet_64()
    assert layers(snp_g) == layers(ref_g) and snp_d == ref_d  # the authors' 64 px pair, which Mimicry copies
    h = torch.zeros(1, 3, 64, 64)
    for block in D.blocks:
        h = block(h)
    assert h.shape == (1, 1024, 2, 2)  # down to 2x2, no plain block


def test_resnet_64_paper_table_is_the_layout_measured_so_far():
    """Not a published layout: G halves from g_ch, D ends at 4x4 with a plain block (kept as it was)."""
    G = build_generator("resnet", resolution=64, g_ch=512)
    D = build_discriminator("resnet", resolution=64, d_ch=64)
    assert layers(read_back(G)) == layers(resnet_generator(4, [512, 256, 128, 64, 32], "nearest"))
    assert layers(read_back(D)) == layers(resnet_discriminator(
        64, [(64, 128, True), (128, 256, True), (256, 512, True), (512, 512, False)], True))


def print_counts():
    """The parameter counts of docs/reproducing.md (python tests/test_layouts.py)."""
    for name, (g, d) in {"cnn 32 (Table 3 G / [CGL] G)": (cgl_dcgan_generator(4), paper_table3_discriminator(32)),
                         "cnn 32 authors D": (cgl_dcgan_generator(4), cgl_sndcgan_discriminator(4)),
                         "cnn 48": (cgl_dcgan_generator(6), paper_table3_discriminator(48)),
                         "cnn 48 authors D": (cgl_dcgan_generator(6), cgl_sndcgan_discriminator(6)),
                         "resnet 32 authors": snp_resnet_32(), "resnet 48": mimicry_sngan_48(),
                         "resnet 64 authors": mimicry_sngan_64()}.items():
        print(f"{name}: G {count(g):,}, D {count(d):,}")


# ----------------------------------------------------------------------------- the variants on the new layers

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name,resolution,layout", [("cnn", 48, "authors"), ("resnet", 48, "paper_table"),
                                                    ("resnet", 32, "authors"), ("resnet", 64, "authors")])
def test_every_variant_normalizes_the_new_layouts(variant, name, resolution, layout):
    torch.manual_seed(0)
    D = build_discriminator(name, resolution=resolution, d_ch=4, layout=layout)
    normalized = apply_spectral_norm(D, variant)
    layers = [m for m in normalized.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(is_normalized(m) == (variant != "none") for m in layers)
    sizes = layer_input_sizes(normalized, (3, resolution, resolution), "cpu")
    assert len(sizes) == len(layers)
    out = normalized(torch.randn(2, 3, resolution, resolution))
    out.sum().backward()
    assert out.shape == (2,) and all(p.grad is not None for p in normalized.parameters() if p.requires_grad)
    if variant in ("reshaped", "builtin"):
        # Every reshaped kernel's norm (a dense SVD) is at least 1, since the power iteration's
        # sigma never exceeds the true one, and within the iteration's lag of 1.
        with torch.no_grad():
            norms = [torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), ord=2).item() for m in layers]
        assert all(1 - 1e-5 <= n <= 1.05 for n in norms), norms


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "resnet", "resolution": 16, "layout": "authors"}, "authors' resnet layout exists at 32, 48, 64"),
    ({"name": "cnn", "resolution": 32, "layout": "table"}, "unknown layout"),
    ({"name": "cnn", "resolution": 32, "init": "kaiming"}, "unknown init"),
    ({"name": "cnn", "resolution": 32, "leaky_slope": 1.5}, "leaky_slope must be a number in"),
    ({"name": "resnet", "resolution": 32, "leaky_slope": 0.2}, "cnn discriminator only"),
])
def test_bad_layout_arguments(kwargs, match):
    args = {"d_ch": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        build_discriminator(args.pop("name"), **args)


def test_upsample_applies_to_the_resnet_generator_only():
    with pytest.raises(ValueError, match="resnet generator only"):
        build_generator("cnn", resolution=32, g_ch=64, upsample="bilinear")
    with pytest.raises(ValueError, match="unknown upsample"):
        build_generator("resnet", resolution=32, g_ch=64, upsample="bicubic")


if __name__ == "__main__":
    print_counts()
