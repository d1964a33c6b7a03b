// Package keeper is relaunch's own fd store, for when no service manager
// keeps one: a small process (relaunch's binary, started in keeper mode)
// that holds a copy of every socket relaunch bound and outlives relaunch.
// Its one main type is Client, relaunch's end of it.
//
// Why: when relaunch dies (kill -9, the OOM killer), its generations keep
// serving on the sockets they inherited, but the slots no generation holds
// would close with relaunch. The kernel then re-indexes the SO_REUSEPORT
// group, and the steering program's index points at another member, or
// past the end (the kernel then picks by hash): connections land on a
// draining generation that no longer accepts, and hang. The keeper holds
// every member, so the group and its steering stay as they were until a
// relaunch started again takes the sockets back (Take) and carries on.
// It needs no ptrace permission (unlike pidfd_getfd), as MOSN and Envoy
// hand their listeners to a new process.
//
// The wire: SOCK_SEQPACKET messages of at most 4 KiB, each with at most
// one fd (SCM_RIGHTS):
//
//	from    message      fd   meaning
//	owner   STORE name   yes  keep fd under name (replaces one of that name)
//	owner   REMOVE name  no   close and forget name
//	owner   BYE          no   relaunch exits cleanly: close everything, exit
//	taker   TAKE         no   hand everything over
//	keeper  FD name      yes  one kept fd (an answer to TAKE)
//	keeper  END          no   that was all: the taker is now the owner
//	keeper  BUSY pid     no   refused: its owner, relaunch pid, is alive
//	keeper  DENIED uid   no   refused: the taker is neither the keeper's uid (uid) nor root
//
// The owner is the relaunch that started the keeper (over a socketpair) or
// the last one that took over. When the owner's connection closes without
// BYE, the keeper is orphaned: it waits for a taker on its abstract unix
// socket, named in its environment ($RELAUNCH_KEEPER, read by Find), for
// as long as another process holds one of its sockets (the generations
// still serving), then exits: with nobody left to accept, a refused
// connection is better than one that waits forever.
//
// Rules no code here can enforce: the keeper trusts a taker by its uid
// only (SO_PEERCRED), and a taker trusts the keeper by its pid (the holder
// of its address it found in /proc); names are the owner's business.
package keeper
