package dashboard

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/progress"
)

// TestOperationFieldsEscaped: the activity page escapes what a record
// says (target, current, phase, host, counts), which any writer of the
// store chooses.
func TestOperationFieldsEscaped(t *testing.T) {
	f := newFixture(t, 50)
	f.d.CacheOperations(0)
	now := time.Now()
	evil := `<script>alert(1)</script>`
	rec := progress.Record{ID: "move-1", Kind: progress.KindMove, Target: evil, Current: evil, Host: evil, Phase: evil,
		Counts: map[string]int64{evil: 1}, Started: now, Updated: now, Expires: now.Add(progress.TTL)}
	b, _ := json.Marshal(map[string]any{"operations": []progress.Record{rec}})
	if _, err := f.d.Manager().Store.Put(context.Background(), progress.Name, b); err != nil {
		t.Fatal(err)
	}
	act := f.get(t, "/ui/activity")
	if strings.Contains(act, evil) {
		t.Fatalf("/ui/activity shows a record's fields unescaped:\n%s", act)
	}
	if !strings.Contains(act, "&lt;script&gt;") {
		t.Fatalf("/ui/activity does not show the record:\n%s", act)
	}
}
