package lease

import (
	"context"
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

// HTTPAsk returns a Config.Ask that posts a handoff request to the
// holder's admin address, giving up after timeout.
func HTTPAsk(timeout time.Duration) func(ctx context.Context, rec Record, volume string) error {
	client := &http.Client{Timeout: timeout}
	return func(ctx context.Context, rec Record, volume string) error {
		u := url.URL{Scheme: "http", Host: rec.Addr, Path: HandoffPath, RawQuery: url.Values{"volume": {volume}}.Encode()}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("handoff refused: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
