"""Frozen text and audio encoders: shapes, empty prompts, windows per latent frame, offline loading."""

import pytest
import torch

from tavr.models.encoders import (
    LogMelAudioEncoder,
    MiniLMTextEncoder,
    UMT5TextEncoder,
    Wav2Vec2AudioEncoder,
    build_audio_encoder,
    build_text_encoder,
    window_per_latent_frame,
)

RATE, FPS = 16000, 25


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder()


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory):
    """A tiny random umT5 encoder and a word-level tokenizer with no special tokens ("" -> no tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    path = tmp_path_factory.mktemp("umt5")
    words = ["<pad>", "</s>", "<unk>", "a", "man", "woman", "talks", "smiles", "in", "kitchen"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=len(words), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8)  # fmt: skip
    UMT5EncoderModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    path = tmp_path_factory.mktemp("wav2vec2")
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
                            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)  # fmt: skip
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True).save_pretrained(path)
    return path


def _frozen(encoder):
    return not encoder.training and not any(p.requires_grad for p in encoder.parameters())


# ----------------------------------------------------------------------------- text


def test_minilm_shapes_mask_and_frozen(minilm):
    x, mask = minilm(["a woman talks in a kitchen", "hi"])
    assert minilm.dim == 384 and x.shape == (2, mask.shape[1], 384) and mask.dtype == torch.bool
    assert mask[0].all() and mask[1].sum() == 3  # [CLS] hi [SEP]
    assert (x[1, 3:] == 0).all()  # padding rows are zero
    minilm.train()
    assert _frozen(minilm)


def test_minilm_empty_prompt_and_different_prompts(minilm):
    x, mask = minilm(["", "a man smiles"])
    assert torch.isfinite(x).all() and mask.sum(1).min() >= 1
    (a, _), (b, _) = minilm(["a man smiles"]), minilm(["a dog barks loudly"])
    assert not torch.allclose(a.mean(1), b.mean(1), atol=1e-3)


def test_minilm_truncates_to_max_length(minilm):
    x, mask = minilm([" ".join(["word"] * 200)])
    assert x.shape == (1, 64, 384) and mask.all()


def test_umt5_loads_from_folder_and_runs(umt5_dir):
    enc = build_text_encoder("umt5", str(umt5_dir))
    assert isinstance(enc, UMT5TextEncoder) and enc.dim == 32 and _frozen(enc)
    x, mask = enc(["a man talks", "", "a woman smiles in a kitchen"])
    assert x.shape == (3, 6, 32) and mask.sum(1).tolist() == [3, 1, 6]
    assert torch.isfinite(x).all() and (x[1] == 0).all()  # "" has no tokens: one zero vector, marked valid
    x, mask = enc([""])
    assert x.shape == (1, 1, 32) and mask.all()


def test_text_errors(tmp_path, minilm):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UMT5TextEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        UMT5TextEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs a local folder"):
        build_text_encoder("umt5", None)
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("clip")
    with pytest.raises(ValueError, match="list of strings"):
        minilm("a bare string")


# ----------------------------------------------------------------------------- audio


def test_window_picks_the_frames_each_latent_frame_covers():
    features = torch.arange(13.0)[None, :, None].expand(2, 13, 3)  # value = video frame index
    windows = window_per_latent_frame(features, context=2)
    assert windows.shape == (2, 4, 8, 3)
    expected = [
        [0, 0, 0, 0, 1, 2, 3, 4],  # latent 0 covers frame 0: frames -3..4, clamped at the start
        [0, 0, 1, 2, 3, 4, 5, 6],  # latent 1 covers 1..4: frames -1..6
        [3, 4, 5, 6, 7, 8, 9, 10],  # latent 2 covers 5..8
        [7, 8, 9, 10, 11, 12, 12, 12],  # latent 3 covers 9..12: clamped at the end
    ]
    assert windows[1, :, :, 2].tolist() == expected
    assert window_per_latent_frame(features[:, :5], context=0)[0, :, :, 0].tolist() == [[0, 0, 1, 2], [1, 2, 3, 4]]


def test_logmel_shapes_padding_and_other_fps():
    enc = build_audio_encoder("logmel")
    assert isinstance(enc, LogMelAudioEncoder) and enc.dim == 320 and _frozen(enc)
    out = enc(torch.randn(2, 2 * RATE) * 0.1, num_frames=49, fps=FPS)
    assert out.shape == (2, 13, 8, 320) and torch.isfinite(out).all()
    short = enc(torch.zeros(1, 100), num_frames=49)  # zero padded: silence everywhere
    assert short.shape == (1, 13, 8, 320) and torch.allclose(short, short.flatten()[0].expand_as(short))
    enc30 = LogMelAudioEncoder(fps=30.0)
    assert enc30.dim == 3 * 80 and enc30(torch.randn(1, RATE), num_frames=33).shape == (1, 9, 8, 240)


def test_logmel_burst_lands_in_the_windows_of_its_frame():
    k = 20  # video frame of the burst; latent 5 covers 17..20 (window 15..22), latent 6 covers 21..24 (19..26)
    audio = torch.randn(1, 2 * RATE) * 1e-3
    t = torch.arange(640) / RATE
    audio[0, k * 640 : (k + 1) * 640] += 0.5 * torch.sin(2 * torch.pi * 1000 * t)
    energy = LogMelAudioEncoder()(audio, num_frames=49).mean(-1)[0]  # (F', W)
    loud = energy > energy.min() + 0.5 * (energy.max() - energy.min())
    assert loud.any(1).nonzero().flatten().tolist() == [5, 6]
    assert energy[5].argmax() == k - 15 and energy[6].argmax() == k - 19


def test_wav2vec2_loads_from_folder_and_runs(wav2vec2_dir):
    enc = build_audio_encoder("wav2vec2", str(wav2vec2_dir))
    assert isinstance(enc, Wav2Vec2AudioEncoder) and enc.dim == 32 and _frozen(enc)
    out = enc(torch.randn(2, 2 * RATE), num_frames=49, fps=FPS)
    assert out.shape == (2, 13, 8, 32) and torch.isfinite(out).all()
    averaged = Wav2Vec2AudioEncoder.from_pretrained(wav2vec2_dir, layers=(1, 2), context=1)
    assert averaged(torch.randn(1, RATE), num_frames=25).shape == (1, 7, 6, 32)


def test_audio_errors(tmp_path):
    enc = LogMelAudioEncoder()
    with pytest.raises(ValueError, match="4k\\+1"):
        enc(torch.zeros(1, 2 * RATE), num_frames=48)
    with pytest.raises(ValueError, match="4k\\+1"):
        window_per_latent_frame(torch.zeros(1, 48, 3))
    with pytest.raises(ValueError, match="\\(B, N\\)"):
        enc(torch.zeros(2 * RATE), num_frames=49)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_audio_encoder("wav2vec2", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs a local folder"):
        build_audio_encoder("wav2vec2")
    with pytest.raises(ValueError, match="unknown audio encoder"):
        build_audio_encoder("hubert")
