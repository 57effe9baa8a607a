package s3fe

import (
	"net/http"
	"time"

	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/manage"
)

// SetBodyIdle sets the idle timeout of request bodies until the returned
// function restores it.
func SetBodyIdle(d time.Duration) func() {
	old := bodyIdle
	bodyIdle = d
	return func() { bodyIdle = old }
}

// SetXMLSlots sets how many XML bodies are read at once (for handlers
// made after) until the returned function restores it.
func SetXMLSlots(n int) func() {
	old := xmlSlots
	xmlSlots = n
	return func() { xmlSlots = old }
}

// XMLSlotsInUse tells how many XML bodies h is reading.
func XMLSlotsInUse(h http.Handler) int { return len(h.(*handler).xml) }

// Buckets is the frontend's buckets of m's store, an idle hold on
// collections lasting linger.
func Buckets(m *manage.Manager, linger time.Duration) *bucket.Store {
	b, _ := buckets(m, linger)
	return b
}

// NewServer is a Server of h, serving maxConns connections at once.
func NewServer(h http.Handler, maxConns int) *Server {
	return &Server{srv: &http.Server{Handler: h}, maxConns: maxConns}
}
