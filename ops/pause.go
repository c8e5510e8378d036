package ops

import (
	"context"
	"log/slog"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

// PauseStore is where pauses outlive a process; the bbolt store implements it.
type PauseStore interface {
	Paused(ctx context.Context) (map[string]event.Pause, error)
	Resume(ctx context.Context, forwarder string) (bool, error)
}

// RestorePauses carries the pauses in store over to the routes a process starts with,
// changing routes in place. A route whose forwarder is paused with the route's
// ConfigHash starts Paused (its target said it is gone; a warning names the way out). A
// paused forwarder whose config changed since is resumed in the store: the change is
// taken as the operator's fix. Pauses of forwarders with no route stay as they are.
func RestorePauses(ctx context.Context, store PauseStore, routes []forwarders.Route, logger *slog.Logger) error {
	paused, err := store.Paused(ctx)
	if err != nil {
		return err
	}
	for i := range routes {
		r := &routes[i]
		name := r.Forwarder.Name()
		p, ok := paused[name]
		switch {
		case !ok:
		case p.ConfigHash == r.ConfigHash:
			r.Paused = true
			logger.Warn("forwarder is paused: its target said it is gone; fix it and run `leadbridge forwarder resume`",
				"forwarder", name, "since", p.Since, "reason", p.Reason)
		default:
			if _, err := store.Resume(ctx, name); err != nil {
				return err
			}
			logger.Info("forwarder resumed: its config changed since it was paused", "forwarder", name)
		}
	}
	return nil
}
