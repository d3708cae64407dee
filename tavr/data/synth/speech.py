"""Speech-like audio for TAVR-Synth: a source-filter model with a syllable rhythm.

A glottal pulse train at the speaker's pitch is shaped by formant resonators
for five vowels; short noise bursts stand in for consonants; syllables follow a
talking rhythm (about 4-5 per second) with pauses. The same syllable plan gives
the mouth opening per video frame, so lips follow the sound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

# vowel: (F1, F2, F3) in Hz, mouth openness 0..1
VOWELS = {
    "a": ((800, 1200, 2500), 1.0),
    "o": ((500, 900, 2400), 0.75),
    "e": ((500, 1850, 2500), 0.6),
    "u": ((350, 800, 2300), 0.4),
    "i": ((300, 2250, 2950), 0.3),
}
BANDWIDTHS = (80.0, 100.0, 130.0)


@dataclass(frozen=True)
class Syllable:
    start: float  # seconds
    consonant: float  # seconds of consonant before the vowel (0 = none)
    vowel_end: float  # seconds
    vowel: str
    loudness: float  # 0..1


def plan_syllables(rng: np.random.Generator, seconds: float, rate_hz: float) -> list[Syllable]:
    """A syllable timeline: consonant-vowel units at about `rate_hz` with pauses."""
    out: list[Syllable] = []
    t = float(rng.uniform(0.02, 0.12))
    while t < seconds - 0.12:
        if out and rng.random() < 0.15:
            t += float(rng.uniform(0.12, 0.3))  # pause
            continue
        dur = float(rng.uniform(0.7, 1.3) / rate_hz)
        cons = float(rng.uniform(0.03, 0.06)) if rng.random() < 0.7 else 0.0
        vowel = str(rng.choice(list(VOWELS)))
        out.append(Syllable(t, cons, min(t + dur, seconds - 0.02), vowel, float(rng.uniform(0.6, 1.0))))
        t += dur + float(rng.uniform(0.0, 0.04))
    return out


def _resonate(x: np.ndarray, freq: float, bw: float, rate: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / rate)
    theta = 2 * np.pi * freq / rate
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)


def _vowel_envelope(n: int, rate: int, s: Syllable) -> np.ndarray:
    """Raised-cosine attack and release over the vowel part of a syllable -> (n,)."""
    env = np.zeros(n)
    a, b = int((s.start + s.consonant) * rate), min(int(s.vowel_end * rate), n)
    if b - a < 8:
        return env
    k = np.arange(b - a)
    att, rel = min(int(0.03 * rate), (b - a) // 3), min(int(0.05 * rate), (b - a) // 3)
    seg = np.ones(b - a)
    seg[:att] = 0.5 - 0.5 * np.cos(np.pi * k[:att] / att)
    seg[b - a - rel :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(rel) / rel)
    env[a:b] = seg
    return env


def synthesize(
    rng: np.random.Generator, syllables: list[Syllable], seconds: float, rate: int, pitch: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render the syllables with a voice at `pitch` Hz.

    Returns (audio (N,) float32 in [-1, 1], mouth opening per sample (N,) in 0..1).
    """
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    # glottal source: pulses at a wandering pitch, tilted towards low frequencies
    f0 = pitch * (1 + 0.07 * np.sin(2 * np.pi * rng.uniform(0.4, 0.9) * t + rng.uniform(0, 6.3)) - 0.05 * t / seconds)
    phase = np.cumsum(f0 / rate)
    source = np.diff(np.floor(phase), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.96], source)

    audio = np.zeros(n)
    mouth = np.zeros(n)
    filtered: dict[str, np.ndarray] = {}
    for s in syllables:
        if s.vowel not in filtered:
            formants, _ = VOWELS[s.vowel]
            y = sum(_resonate(source, f, bw, rate) for f, bw in zip(formants, BANDWIDTHS))
            filtered[s.vowel] = y / (np.sqrt(np.mean(y**2)) + 1e-9)
        openness = VOWELS[s.vowel][1]
        env = _vowel_envelope(n, rate, s)
        audio += filtered[s.vowel] * env * s.loudness * (0.45 + 0.55 * openness)
        mouth = np.maximum(mouth, env * openness * (0.6 + 0.4 * s.loudness))
        if s.consonant > 0:  # fricative or plosive burst, quieter than the vowel
            a, b = int(s.start * rate), int((s.start + s.consonant) * rate)
            noise = rng.standard_normal(b - a)
            lo = rng.uniform(1500, 3500)
            noise = _resonate(noise, lo, lo * 0.8, rate)
            noise /= np.sqrt(np.mean(noise**2)) + 1e-9
            audio[a:b] += 0.15 * s.loudness * noise * np.hanning(b - a)
    audio += 0.002 * rng.standard_normal(n)  # room tone
    audio *= 0.6 / (np.abs(audio).max() + 1e-9)
    return audio.astype(np.float32), mouth.astype(np.float32)


def per_frame(signal: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """Mean of a per-sample signal over each video frame's window -> (frames,)."""
    hop = rate / fps
    return np.array(
        [signal[int(round(i * hop)) : max(int(round((i + 1) * hop)), int(round(i * hop)) + 1)].mean() for i in range(frames)],
        dtype=np.float32,
    )
