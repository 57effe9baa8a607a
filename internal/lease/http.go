package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HandoffPath is where a node's admin API takes handoff requests:
// POST HandoffPath?volume=ID. The node answers 200 once it has flushed
// the volume and released its lease (or did not hold it), and an error
// status with a message otherwise.
const HandoffPath = "/v1/handoff"

// ErrUnauthorized is the error of a handoff request that the holder's
// admin API refused for want of the right token.
var ErrUnauthorized = errors.New("lease: handoff request unauthorized")

// HTTPAsk returns a Config.Ask that posts a handoff request to the
// holder's admin address, giving up after timeout.
func HTTPAsk(timeout time.Duration) func(ctx context.Context, rec Record, volume string) error {
	return HTTPAskToken(timeout, "")
}

// HTTPAskToken is HTTPAsk for admin APIs that require a bearer token
// (all the daemons sharing a store use one); "" sends none.
func HTTPAskToken(timeout time.Duration, token string) func(ctx context.Context, rec Record, volume string) error {
	client := &http.Client{Timeout: timeout}
	return func(ctx context.Context, rec Record, volume string) error {
		u := url.URL{Scheme: "http", Host: rec.Addr, Path: HandoffPath, RawQuery: url.Values{"volume": {volume}}.Encode()}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode == http.StatusUnauthorized {
			return fmt.Errorf("%w: the holder's admin API refused this node's token (%s): give the daemons' admin token", ErrUnauthorized, strings.TrimSpace(string(body)))
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("handoff refused: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
