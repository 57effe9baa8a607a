package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// outcome classifies a failed request.
type outcome int

const (
	// final: the server answered; retrying gives the same answer.
	final outcome = iota
	// notApplied: a transient failure that certainly changed nothing
	// (503 SlowDown, 429, a connection never made): retry.
	notApplied
	// maybeApplied: a transient failure after the request may have
	// reached the server (a timeout, a reset connection, a 500): the
	// request may have taken effect. Retry; a write must read the
	// answer of its retry in that light.
	maybeApplied
)

// status returns the HTTP status of an SDK error, 0 if none.
func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// code returns the S3 error code of an SDK error ("NoSuchKey"), "" if
// none.
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// classify tells whether err, from an attempt run under attemptCtx whose
// parent is ctx, is worth another attempt.
func classify(ctx context.Context, err error) outcome {
	if ctx.Err() != nil {
		return final // the caller gave up
	}
	switch st := status(err); {
	case st == http.StatusServiceUnavailable || st == http.StatusTooManyRequests || code(err) == "SlowDown":
		return notApplied
	case code(err) == "ConditionalRequestConflict":
		// 409 from AWS: the request met another conditional write in
		// flight and was not applied; retry it.
		return notApplied
	case st >= 500:
		return maybeApplied
	case st != 0:
		if code(err) == "RequestTimeout" { // 400: the server gave up reading the body
			return notApplied
		}
		return final
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return notApplied
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return notApplied
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) {
		return maybeApplied
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return maybeApplied
	}
	var ce interface{ CanceledError() bool } // SDK's RequestCanceledError for a timed-out attempt
	if errors.As(err, &ce) {
		return maybeApplied
	}
	return final
}

// backoff returns the pause before attempt n (1 for the first retry):
// exponential from 50 ms, capped at 5 s, with full jitter.
func backoff(n int) time.Duration {
	d := 50 * time.Millisecond << min(n-1, 7)
	d = min(d, 5*time.Second)
	return time.Duration(rand.Int64N(int64(d))) + time.Millisecond
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transient returns err mapped for the caller, as the outcome of a
// request the server never answered in the end: context errors as
// they are, timeouts as ErrTimeout.
func transient(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("s3: %s %s: %w", op, key, ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: s3: %s %s: %v", objstore.ErrTimeout, op, key, err)
	}
	var ce interface{ CanceledError() bool }
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: s3: %s %s: %v", objstore.ErrTimeout, op, key, err)
	}
	return fmt.Errorf("s3: %s %s: %w", op, key, err)
}
