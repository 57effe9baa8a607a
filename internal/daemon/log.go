package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogfLogger returns a logger that passes each record to logf as one
// line of text ("level=... msg=... key=value..."), without a time;
// nil logf discards them.
func LogfLogger(logf func(format string, args ...any)) *slog.Logger {
	if logf == nil {
		return slog.New(discard{})
	}
	return slog.New(slog.NewTextHandler(logfWriter(logf), &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// logfWriter takes the one Write a text handler makes per record.
type logfWriter func(format string, args ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = logfWriter(nil)

type discard struct{}

func (discard) Enabled(context.Context, slog.Level) bool  { return false }
func (discard) Handle(context.Context, slog.Record) error { return nil }
func (d discard) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discard) WithGroup(string) slog.Handler           { return d }

// Logf adapts l to the printf-style logging of packages that take one
// (lease, nbd): each call is a record at level with the formatted text
// as its message, tagged with component.
func Logf(l *slog.Logger, level slog.Level, component string) func(format string, args ...any) {
	return func(format string, args ...any) {
		if l.Enabled(context.Background(), level) {
			l.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", component)
		}
	}
}
