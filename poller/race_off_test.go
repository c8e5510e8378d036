//go:build !race

package poller

// raceBuild is true in a build with the race detector, which allocates on its own.
const raceBuild = false
