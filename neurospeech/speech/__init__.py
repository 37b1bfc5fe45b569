"""Speech representations (mel, whisper, wav2vec2) computed on whole audio files."""
