package main

import "github.com/leadbridge/leadbridge/internal/httpx"

// Every outbound request names this build: User-Agent: leadbridge/<Version>.
func init() { httpx.Version = Version }
