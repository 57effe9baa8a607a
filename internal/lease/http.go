package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
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
		status, body, err := post(ctx, client, token, rec.Addr, HandoffPath, url.Values{"volume": {volume}})
		if err != nil || status == http.StatusOK {
			return err
		}
		return fmt.Errorf("handoff refused: %s", body)
	}
}

// post posts a request without a body to a node's admin API, with token
// ("" sends none), and returns the answer's status and the start of its
// body (with the status, for messages); a refused token is
// ErrUnauthorized.
func post(ctx context.Context, client *http.Client, token, addr, path string, q url.Values) (int, string, error) {
	u := url.URL{Scheme: "http", Host: addr, Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	body := strings.TrimSpace(string(b))
	if resp.StatusCode == http.StatusUnauthorized {
		return 0, "", fmt.Errorf("%w: the holder's admin API refused this node's token (%s): give the daemons' admin token", ErrUnauthorized, body)
	}
	return resp.StatusCode, resp.Status + ": " + body, nil
}

// EpochPath is where a node's admin API takes requests to begin a new
// epoch of a volume it writes, for a move's cut-over (docs/pools.md):
// POST EpochPath?volume=ID&at_least=E&key=K (K: at most 64 bytes). The
// node answers 200 with {"epoch":N} (N ≥ E) once it has stored a head
// in epoch N, keeping its lease (a new epoch unless it began N for an
// earlier ask with the same key: volume.Volume.BeginEpoch); 409 if it
// does not hold the lease; an error status with a message otherwise
// (also when E is more than one past its epoch: it begins one per ask).
// The answer proves nothing by itself: the asker reads the head.
const EpochPath = "/v1/epoch"

// ErrNotHolder: the node asked to begin an epoch does not hold the
// volume's lease.
var ErrNotHolder = errors.New("lease: the node asked does not hold the volume's lease")

// EpochAsk asks the holder of a lease (rec) to make volume's epoch at
// least atLeast, keeping the lease (EpochPath); key names the asker's
// reason to ask (a move's placement record version).
type EpochAsk func(ctx context.Context, rec Record, volume string, atLeast uint64, key string) error

// HTTPEpochAskToken returns an EpochAsk that posts to the holder's
// admin address with token ("" sends none), giving up after timeout.
func HTTPEpochAskToken(timeout time.Duration, token string) EpochAsk {
	client := &http.Client{Timeout: timeout}
	return func(ctx context.Context, rec Record, volume string, atLeast uint64, key string) error {
		q := url.Values{"volume": {volume}, "at_least": {strconv.FormatUint(atLeast, 10)}, "key": {key}}
		status, body, err := post(ctx, client, token, rec.Addr, EpochPath, q)
		switch {
		case err != nil || status == http.StatusOK:
			return err
		case status == http.StatusConflict:
			return fmt.Errorf("%w: %s", ErrNotHolder, body)
		}
		return fmt.Errorf("lease: beginning a new epoch refused: %s", body)
	}
}
