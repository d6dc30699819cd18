package Mesh::Cut;

# A path that can be cut: a TCP relay from a port of ours to a node's port, in a child process.
# `freeze` cuts it as a dropped link does: nothing is forwarded either way any more, every
# connection stays open (no FIN, no RST), and new connections are taken (the kernel's backlog
# answers a connect, as a host behind a dead route would not; the node behind it answers anyone
# else). `thaw` lets bytes flow again. `freeze_open` cuts only the connections open now, as a
# path from one peer does while others still get through (on one host all peers come from the
# same address; the peer that holds the open connection is the one cut off): those are never
# read again and stay open, new ones are forwarded. Signals carry the orders (USR1 freeze,
# USR2 thaw, HUP freeze_open); the child leaves with POSIX::_exit (no destructor of the test's
# objects runs in it).
# Not frozen, the path is as alive as the node behind it: while nothing listens on the node's
# port (it died), the path's port is closed too (a connect is refused, as the master's probe of
# a dead node expects), and opened again when the node is back. Seen in /proc/net/tcp{,6}, so
# the relay never connects to the node to find out.

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use POSIX qw(_exit);
use Time::HiRes qw(time);

# Mesh::Cut->new(listen => $port, to => $port): the relay runs once `new` returns.
sub new {
	my ($class, %o) = @_;
	my $listen = sub {
		IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $o{listen}, Listen => 128,
			ReuseAddr => 1, Proto => 'tcp');
	};
	my $ls = $listen->() or die "listen $o{listen}: $!";
	my $pid = fork() // die "fork: $!";
	if (!$pid) {
		my $frozen = 0;
		my $cut_open = 0;
		local $SIG{USR1} = sub { $frozen = 1 };
		local $SIG{USR2} = sub { $frozen = 0 };
		local $SIG{HUP} = sub { $cut_open = 1 };
		local $SIG{TERM} = sub { _exit(0) };
		my %peer;    # fileno → the socket at the other end
		my %sock;    # fileno → socket
		my @held;    # connections cut by freeze_open: kept open, never read
		my $sel = IO::Select->new($ls);
		my $looked = 0;
		while (1) {
			if ($frozen) {
				select(undef, undef, undef, 0.05);
				next;
			}
			if ($cut_open) {
				$cut_open = 0;
				for my $fd (keys %sock) {
					push @held, $sock{$fd};
					$sel->remove($sock{$fd});
				}
				%peer = ();
				%sock = ();
			}
			if (time - $looked >= 0.2) {
				$looked = time;
				my $up = listening($o{to});
				if (!$up && $ls) {
					$sel->remove($ls);
					close $ls;
					undef $ls;
				} elsif ($up && !$ls) {
					$ls = $listen->();
					$sel->add($ls) if $ls;
				}
			}
			my @ready = $sel->can_read(0.05);
			for my $fh (@ready) {
				if ($ls && $fh == $ls) {
					my $c = $ls->accept or next;
					my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{to}, Proto => 'tcp');
					if (!$u) { close $c; next; }
					@peer{fileno $c, fileno $u} = ($u, $c);
					@sock{fileno $c, fileno $u} = ($c, $u);
					$sel->add($c, $u);
					next;
				}
				my $other = $peer{fileno $fh} or next;
				my $n = sysread($fh, my $buf, 65536);
				if (!$n) {
					for my $s ($fh, $other) {
						$sel->remove($s);
						delete $peer{fileno $s};
						delete $sock{fileno $s};
						close $s;
					}
					next;
				}
				# Blocking write: the other end is a local nginx that reads.
				my $off = 0;
				while ($off < $n) {
					my $w = syswrite($other, $buf, $n - $off, $off);
					last unless defined $w;
					$off += $w;
				}
			}
		}
	}
	close $ls;
	return bless { pid => $pid }, $class;
}

# Is something listening on `port` (any address, IPv4 or IPv6)?
sub listening {
	my ($port) = @_;
	my $hex = sprintf ':%04X', $port;
	for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
		open(my $in, '<', $f) or next;
		while (<$in>) {
			my (undef, $local, undef, $st) = split ' ';
			return 1 if $st && $st eq '0A' && substr($local, -5) eq $hex;
		}
	}
	return 0;
}

sub freeze { kill 'USR1', $_[0]{pid} }
sub thaw { kill 'USR2', $_[0]{pid} }
sub freeze_open { kill 'HUP', $_[0]{pid} }

sub stop {
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

1;
