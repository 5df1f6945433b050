package config

// EscapeValue exposes escapeValue to the external tests.
var EscapeValue = escapeValue
