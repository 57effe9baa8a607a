package s3fe

import (
	"net/http"
	"time"
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
