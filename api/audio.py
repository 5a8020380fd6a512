"""POST /v1/audio/speech (her voice) and /v1/audio/transcriptions (Whisper), shaped as OpenAI's.

Speech: ``model`` names a character (``daiyu`` or any of her model ids; OpenAI's own TTS model names
are accepted too, then ``voice`` picks who speaks); ``voice`` may name another character (her voice
and language) or an engine's voice (``en_US-joe-medium``, ``zh-CN-XiaoyiNeural``...); OpenAI's stock
voice names (alloy, nova, ...) mean her own voice. Audio is made by voice.speak and encoded by ffmpeg.
Transcription: a multipart upload, decoded by ffmpeg and heard by the ASR stage (voice.transcribe).
Both run one at a time in a worker thread: on 2 cores two of them at once only make both slower.
"""
from __future__ import annotations

import re
import subprocess
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from api.conversation import resolve_model
from api.errors import APIError
from api.schemas import (
    TRANSCRIPT_FORMATS,
    SpeechRequest,
    Transcription,
    TranscriptionSegment,
    TranscriptionVerbose,
    VoiceRef,
)
from api.security import check_key
from characters import Card, list_characters

OPENAI_TTS_MODELS = {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar"}
_VOICE_NAME = re.compile(r"^[A-Za-z0-9_+-]{1,64}$")  # engine voice names; never a path
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
_ENCODE = {  # ffmpeg output options per format (pcm: OpenAI's raw 24 kHz 16-bit little-endian mono)
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "pcm": ["-ac", "1", "-ar", "24000", "-f", "s16le"],
}
LANGUAGE_NAMES = {"zh": "chinese", "en": "english"}


def who_speaks(model: str, voice: str | VoiceRef | None) -> tuple[Card | None, Any]:
    """The character whose language is spoken and the voice argument for voice.speak."""
    card = None if model in OPENAI_TTS_MODELS else resolve_model(model).card
    name = voice.id if isinstance(voice, VoiceRef) else voice
    if not name or name in OPENAI_VOICES:
        return card, (card.voice if card else None)
    others = {c.id: c for c in list_characters()}
    if name in others:
        return others[name], others[name].voice
    if not _VOICE_NAME.match(name):
        raise APIError(400, f"'{name}' is not a voice: name a character (GET /v1/models) or an engine's voice "
                            "(letters, digits, '_', '-').", param="voice", code="invalid_value")
    return card, name


def encode(wav: bytes, fmt: str) -> bytes:
    """WAV bytes in OpenAI's ``response_format``."""
    if fmt == "wav":
        return wav
    from voice.audio import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", "pipe:0", *_ENCODE[fmt], "pipe:1"]
    proc = subprocess.run(cmd, input=wav, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise APIError(500, f"Encoding {fmt} failed (ffmpeg: {why[0]}); ask for response_format 'wav'.")
    return proc.stdout


def _voice_error(exc: Exception) -> APIError:
    return APIError(400, str(exc), code="invalid_audio")


def _srt_time(s: float, sep: str) -> str:
    ms = int(round(s * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def subtitles(segments: list[TranscriptionSegment], fmt: str) -> str:
    if fmt == "vtt":
        cues = [f"{_srt_time(s.start, '.')} --> {_srt_time(s.end, '.')}\n{s.text.strip()}" for s in segments]
        return "WEBVTT\n\n" + "\n\n".join(cues) + "\n"
    cues = [f"{i}\n{_srt_time(s.start, ',')} --> {_srt_time(s.end, ',')}\n{s.text.strip()}"
            for i, s in enumerate(segments, 1)]
    return "\n\n".join(cues) + "\n"


router = APIRouter(dependencies=[Depends(check_key)])


@router.post("/v1/audio/speech")
async def speech(body: SpeechRequest, request: Request) -> Response:
    service = request.app.state.zhiyin
    if body.stream_format != "audio":
        raise APIError(400, "stream_format 'sse' is not supported; use 'audio'.", param="stream_format",
                       code="unsupported_value")
    limit = service.settings.api_max_speech_chars
    if len(body.input) > limit:
        raise APIError(400, f"'input' is {len(body.input)} characters, more than {limit}; send less at once.",
                       param="input", code="string_above_max_length")
    card, voice = who_speaks(body.model, body.voice)

    def make() -> bytes:
        from voice import VoiceError, speak

        with service.audio:
            try:
                spoken = speak(body.input, lang=card.lang if card else "auto", engine=service.settings.tts_engine,
                               voice=voice, rate=body.speed)
            except VoiceError as exc:
                raise _voice_error(exc) from exc
        return encode(spoken.wav_bytes(), body.response_format)

    audio = await run_in_threadpool(make)
    return Response(audio, media_type=MEDIA_TYPES[body.response_format],
                    headers={"Content-Disposition": f'attachment; filename="speech.{body.response_format}"'})


@router.post("/v1/audio/transcriptions")
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,  # accepted; the ASR stage sets its own prompt per language
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float | None, Form()] = None,  # accepted; decoding is greedy
) -> Response:
    service = request.app.state.zhiyin
    if response_format not in TRANSCRIPT_FORMATS:
        raise APIError(400, f"response_format '{response_format}' is not supported; use one of "
                            f"{', '.join(TRANSCRIPT_FORMATS)}.", param="response_format", code="unsupported_value")
    lang = (language or "auto").strip().lower().split("-")[0] or "auto"
    if lang not in ("auto", "zh", "en"):
        raise APIError(400, f"language '{language}' is not supported; use zh or en, or leave it out to detect.",
                       param="language", code="unsupported_value")
    data = await file.read()

    def hear() -> Any:
        from voice import VoiceError, transcribe

        with service.audio:
            try:
                return transcribe(data, lang=lang, engine=service.settings.asr_engine)
            except VoiceError as exc:
                raise _voice_error(exc) from exc

    heard = await run_in_threadpool(hear)
    segments = [TranscriptionSegment(id=i, start=s.start_s, end=s.end_s, text=s.text)
                for i, s in enumerate(heard.segments)]
    if response_format == "text":
        return PlainTextResponse(heard.text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(subtitles(segments, response_format))
    if response_format == "verbose_json":
        verbose = TranscriptionVerbose(language=LANGUAGE_NAMES.get(heard.language, heard.language),
                                       duration=heard.duration_s, text=heard.text, segments=segments)
        return JSONResponse(verbose.model_dump())
    return JSONResponse(Transcription(text=heard.text).model_dump())
