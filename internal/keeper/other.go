//go:build !linux

package keeper

import "errors"

// Main: there is no keeper outside Linux.
func Main() {}

// Client is relaunch's end of its keeper (Linux only).
type Client struct{}

func (c *Client) Close() error            { return nil }
func (c *Client) Store(string, int) error { return errors.New("keeper: Linux only") }
func (c *Client) Release()                {}
func (c *Client) Pid() int                { return 0 }
