//go:build !linux

package exechelper

// Outside Linux relaunch never starts the helper: it runs only on Linux.
