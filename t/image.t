#!/usr/bin/perl

# The images for real (make image-test; make test runs it where a container runtime answers):
# the compose file's mesh (master, ingest, root relay, two edges) started by podman-compose or
# docker compose as containers on their own network; a broadcaster publishes to the ingest
# container, a viewer with a token plays HLS and RTMP from the edge container; the root relay
# container is killed and the stream is back at the edge within one node timeout; the master
# container restarts and neither the broadcaster nor a viewer is dropped. The images run as a
# user, expose 1935 and 8080, answer their health check and hold no secret; the compose tool's
# commands carry no key; a node started with a bad variable exits at once naming it.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use Digest::SHA ();
use JSON::PP qw(decode_json encode_json);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Mesh::Test qw(free_port publish probe wait_until reap spawn);

my $must = $ENV{MESH_IMAGE_TEST};    # make image-test: a missing piece fails instead of skipping
sub missing {
	plan(skip_all => $_[0]) unless $must;
	plan(tests => 1);
	fail("image-test: $_[0]");
	exit 1;
}

chomp(my $rt = qx{bash scripts/container-runtime.sh 2>/dev/null} // '');
missing('no container runtime (podman or docker)') unless $rt;
my $tag = $ENV{IMAGE_TAG} || 'latest';
my %image = map { ($_ => "ngx-rtmp-mesh-$_:$tag") } qw(node master);
for (values %image) { missing("no image $_ (make image)") if system("$rt image inspect $_ >/dev/null 2>&1") }
my @compose = $rt eq 'podman' ? ('podman-compose') : ('docker', 'compose');
missing("no $compose[0]") if system("command -v $compose[0] >/dev/null 2>&1") || ($rt eq 'docker' && system('docker compose version >/dev/null 2>&1'));

sub slurp { open my $f, '<', $_[0] or return ''; local $/; <$f> }
sub rtq { my $out = qx{$rt @_ 2>&1}; chomp $out; return $out }

# --- the images themselves.
for my $what (qw(node master)) {
	my $cfg = decode_json(rtq('image', 'inspect', '--format', "'{{json .Config}}'", $image{$what}));
	is($cfg->{User}, 'mesh', "$what image: runs as user mesh");
	# (podman shows the health check beside the config, docker in it)
	my $hc = $rt eq 'podman' ? decode_json(rtq('image', 'inspect', '--format', "'{{json .HealthCheck}}'", $image{$what})) : $cfg->{Healthcheck};
	ok(ref $hc && grep(m{healthcheck\.sh}, @{$hc->{Test} // []}), "$what image: has a health check");
	ok(!grep(/KEY|TOKEN|SECRET/i, @{$cfg->{Env} // []}), "$what image: no secret in its environment");
	my $size = rtq('image', 'inspect', '--format', '{{.Size}}', $image{$what});
	note(sprintf('%s: %.0f MB', $image{$what}, $size / 1e6));
}
my $ports = decode_json(rtq('image', 'inspect', '--format', "'{{json .Config.ExposedPorts}}'", $image{node}));
is_deeply([ sort keys %$ports ], [ '1935/tcp', '8080/tcp' ], 'node image: exposes 1935 and 8080');

# --- a bad variable: exit at once with one line naming it (podman run's own lines aside).
for my $case ([ { NODE_ROLE => 'edge' }, 'NODE_ROLE' ], [ { NGINX_PORT => 'x' }, 'NGINX_PORT' ],
	[ { MASTER_SERVER => 'http://master:8000', NODE_ID => 'e1' }, 'NODE_KEY' ]) {
	my ($env, $var) = @$case;
	my $t0 = time;
	my $out = qx{$rt run --rm --no-healthcheck @{[ map { "-e $_=$env->{$_}" } sort keys %$env ]} $image{node} 2>&1};
	my $st = $? >> 8;
	my @lines = grep { /\S/ } split /\n/, $out;
	ok($st == 1 && time - $t0 < 20 && @lines == 1 && $lines[0] =~ /\b$var\b/, "node container, bad $var: exits 1 at once, one line naming it")
		or diag("exit $st in @{[ time - $t0 ]} s: $out");
}

# --- the compose mesh, on its own network, host ports from the harness.
my $dir = tempdir('mesh-image-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
chmod 0700, $dir;
sub rnd { open my $r, '<', '/dev/urandom' or die; read $r, my $b, 24; return unpack 'H*', $b }
my ($mkey, $admin) = (rnd(), rnd());
sub secret_file {
	my ($name, $text) = @_;
	my $old = umask 077;
	open my $f, '>', "$dir/$name" or die "$dir/$name: $!";
	print $f $text;
	close $f;
	umask $old;
}
secret_file('master.env', "MASTER_KEY=$mkey\nADMIN_TOKEN=$admin\n");
# Each node its own key, derived from the master secret as mesh-tool node-key does.
secret_file("$_.env", 'NODE_KEY=' . Digest::SHA::hmac_sha256_hex("ngx_rtmp_mesh node key v1\n$_\n0", $mkey) . "\n")
	for qw(ingest-1 root-1 edge-1 edge-2);
# The master's TLS, as docker-compose.yml says to make it: nodes verify it by the name "master".
my $tls_out = qx{bash scripts/mesh-tls.sh '$dir/tls' master localhost 127.0.0.1 2>&1};
is($?, 0, 'a private CA and the master\'s certificate (scripts/mesh-tls.sh)') or diag($tls_out);
my $ca = "$dir/tls/ca.pem";
secret_file('admin.header', "Authorization: Bearer $admin\nContent-Type: application/json\n");

my $interval = 2;
my $node_timeout = 3 * $interval;    # the master's default: three heartbeat intervals
my %port = map { ($_ => free_port()) } qw(MASTER_PORT INGEST_RTMP_PORT EDGE1_RTMP_PORT EDGE1_HTTP_PORT EDGE2_RTMP_PORT EDGE2_HTTP_PORT);
my $project = "meshimg$$";
local %ENV = (%ENV, %port, MESH_SECRETS => $dir, HEARTBEAT_INTERVAL => $interval);
my $log = "$dir/compose.log";
sub compose {
	my $cmd = join ' ', map { "'$_'" } @compose, '-p', $project, '-f', 'docker-compose.yml', @_;
	return system("$cmd >>'$log' 2>&1");
}
sub ctr { my ($svc) = @_; $rt eq 'podman' ? "${project}_${svc}_1" : "$project-$svc-1" }
my @nodes = qw(ingest-1 root-1 edge-1 edge-2);
my $up = 0;
END {
	if ($up) {
		local $?;
		# The containers' anonymous volumes (the images' VOLUMEs) go with them.
		my @vols = map { split ' ' } map { rtq('inspect', '--format', "'{{range .Mounts}}{{.Name}} {{end}}'", ctr($_)) } 'master', @nodes;
		compose('down', '-v', '-t', '2');
		system("$rt volume rm -f @{[ grep { /^[\w.-]+$/ } @vols ]} >/dev/null 2>&1") if @vols;
		system("$rt network rm -f ${project}_default >/dev/null 2>&1");
	}
}

$up = 1;
is(compose('up', '-d', ($rt eq 'podman' ? '--no-build' : ('--no-build', '--quiet-pull'))), 0, "$compose[0] up -d: the mesh starts")
	or diag(slurp($log));
unlike(slurp($log), qr/\Q$mkey\E|\Q$admin\E/, "$compose[0]'s commands carry no key (env files)");

my $murl = "https://127.0.0.1:$port{MASTER_PORT}";
# The master over HTTPS, verified against the CA, with curl (the token in a header file).
sub api {
	my ($method, $path, $body) = @_;
	my @data = defined $body ? ('--data-binary', encode_json($body)) : ();
	open my $out, '-|', 'curl', '-s', '--max-time', '10', '--cacert', $ca, '-H', "\@$dir/admin.header", '-X', $method,
		@data, '-w', '\n%{http_code}', "$murl$path" or die "curl: $!";
	my $text = do { local $/; <$out> } // '';
	close $out;
	my $st = $text =~ s/\n?(\d{3})\z// ? $1 : 599;
	return ($st, $text =~ /^\s*[\{\[]/ ? decode_json($text) : $text);
}
sub healthy { (api('GET', '/healthz'))[0] == 200 }
ok(wait_until(\&healthy, 30), 'master up (HTTPS, verified against the CA)');
is(HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$port{MASTER_PORT}/healthz")->{status}, 400, 'plain HTTP to the master: 400');
sub alive { my (undef, $d) = api('GET', '/admin/nodes'); return { map { ($_->{node_id} => $_) } grep { $_->{alive} // 1 } @{ref $d eq 'HASH' ? $d->{nodes} // [] : []} } }
ok(wait_until(sub { my $a = alive(); !grep { !$a->{$_} } @nodes }, 30), 'four nodes announced to the master by name')
	or diag(explain(alive()), `$rt logs @{[ ctr('edge-1') ]} 2>&1 | tail -5`);

api('POST', '/admin/accounts', { name => 'demo' });
my ($st, $d) = api('POST', '/admin/streams', { stream => 'demo', account => 'demo' });
like($st, qr/^20[01]$/, 'a stream key from the admin API') or diag(explain($d));
my $key = ref $d ? $d->{key} : '';
(undef, $d) = api('POST', '/admin/tokens', { stream => 'demo', ttl_s => 3600 });
my $token = ref $d ? $d->{token} : '';

my $pub = publish("rtmp://127.0.0.1:$port{INGEST_RTMP_PORT}/live/demo?key=$key", secs => 600);
my $live;
ok(wait_until(sub { (undef, $d) = api('GET', '/admin/streams'); $live = ref $d ? $d->{live}{demo} : undef; $live && @{$live->{roots} // []} && @{$live->{edges} // []} }, 30),
	'the master places the stream: ingest-1 → root-1 → an edge') or diag(explain($d), `$rt logs @{[ ctr('ingest-1') ]} 2>&1 | tail -5`);
my $edge = $live->{edges}[0]{to} // 'edge-1';
my ($erpc, $ehttp) = $edge eq 'edge-2' ? @port{qw(EDGE2_RTMP_PORT EDGE2_HTTP_PORT)} : @port{qw(EDGE1_RTMP_PORT EDGE1_HTTP_PORT)};
note("demo: ingest-1 → $live->{roots}[0]{to} → $edge");
my $play = "rtmp://127.0.0.1:$erpc/relay/demo?token=$token";
ok(wait_until(sub { probe($play, secs => 1, timeout => 10)->{video} > 0 }, 30), "RTMP from the $edge container, with a viewer token");
is(probe("rtmp://127.0.0.1:$erpc/relay/demo", secs => 1, timeout => 10)->{video}, 0, 'no token: no video');
my $hls = HTTP::Tiny->new(timeout => 30);
my $r;
ok(wait_until(sub { $r = $hls->get("http://127.0.0.1:$ehttp/hls/demo/master.m3u8?token=$token"); $r->{status} == 200 }, 40),
	"HLS master playlist from the $edge container") or diag("$r->{status} $r->{content}");
my ($variant) = ($r->{content} // '') =~ /^([^#\s][^\s]*)$/m;
my ($seg, $pl);
ok($variant && wait_until(sub {
	my $u = $variant =~ m{^https?://} ? $variant : "http://127.0.0.1:$ehttp/hls/demo/$variant";
	$pl = $hls->get($u);
	($seg) = ($pl->{content} // '') =~ /^([^#\s][^\s]*)$/m;
	$seg }, 30), 'a media playlist with segments');
if ($seg) {
	(my $base = $variant) =~ s{[^/]*$}{};
	my $u = $seg =~ m{^https?://} ? $seg : "http://127.0.0.1:$ehttp/hls/demo/$base$seg";
	my $s = $hls->get($u);
	ok($s->{status} == 200 && length($s->{content}) > 1000, 'a segment, ' . length($s->{content} // '') . ' bytes');
}
is($hls->get("http://127.0.0.1:$ehttp/hls/demo/master.m3u8")->{status}, 401, 'HLS without a token: 401');

# Health checks answer in the running containers.
is(system("$rt healthcheck run @{[ ctr($edge) ]} >/dev/null 2>&1") >> 8, 0, "$edge: health check passes") if $rt eq 'podman';
is(system("$rt healthcheck run @{[ ctr('master') ]} >/dev/null 2>&1") >> 8, 0, 'master: health check passes') if $rt eq 'podman';
is(rtq('exec', ctr($edge), 'id', '-un'), 'mesh', "$edge runs as mesh");
unlike(rtq('exec', ctr($edge), 'cat', '/proc/1/environ'), qr/\Q$mkey\E/, "$edge: the key is not in nginx's environment");

# --- the root relay container dies (its nginx killed from outside, as a crash or the OOM killer
# would): its restart policy brings it back and the stream is back at the edge within one node
# timeout, before the master would even call it dead.
my $root = $live->{roots}[0]{to};
chomp(my $rpid = rtq('inspect', '--format', '{{.State.Pid}}', ctr($root)));
my $started = rtq('inspect', '--format', '{{.State.StartedAt}}', ctr($root));
my $t0 = time;
ok($rpid =~ /^\d+$/ && kill('KILL', $rpid), "$root container killed (SIGKILL to its nginx, pid $rpid)");
ok(wait_until(sub { rtq('inspect', '--format', '{{.State.StartedAt}}', ctr($root)) ne $started }, 10), "$root restarted by its restart policy");
# Two seconds of packets (not the few a dead stream's cache could give), asked after the restart;
# "back" is when they have all come, an upper bound.
my $back;
wait_until(sub { probe($play, secs => 2, timeout => 6)->{video} >= 25 and $back = time }, 30);
ok($back && $back - $t0 <= $node_timeout, sprintf('stream back at %s %.1f s after (node timeout %d s)', $edge, ($back // time) - $t0, $node_timeout))
	or diag(`$rt ps -a --format '{{.Names}} {{.Status}}' 2>&1`, explain(api('GET', '/admin/streams')));

# --- the master restarts: the broadcaster and a viewer keep going, the token still plays.
# The viewer: ffmpeg reading the edge with -progress (frame=N every half second).
my $prog = "$dir/viewer.progress";
my $viewer = spawn('ffmpeg', '-nostdin', '-loglevel', 'error', '-rw_timeout', '15000000', '-i', $play,
	'-f', 'null', '-progress', $prog, '-stats_period', '0.5', '-');
sub frames { my @f = slurp($prog) =~ /^frame=(\d+)/mg; return $f[-1] // 0 }
ok(wait_until(sub { frames() > 25 }, 20), 'a viewer playing at the edge');
$t0 = time;
is(system("$rt restart -t 5 @{[ ctr('master') ]} >/dev/null 2>&1"), 0, 'master container restarted');
ok(wait_until(\&healthy, 30), 'master up again');
ok(wait_until(sub { my $a = alive(); !grep { !$a->{$_} } @nodes }, 30), 'its four nodes back');
my $f0 = frames();
ok(wait_until(sub { frames() > $f0 + 50 }, 20), sprintf('the viewer still plays after it (%d frames, then more)', $f0));
ok(!defined reap($viewer, 0), 'the viewer was not dropped');
kill 'TERM', $viewer;
reap($viewer, 5);
ok(kill(0, $pub) && !defined reap($pub, 0), 'the broadcaster was not dropped');
# (the master's restart makes new hop keys: the pushes reconnect once with them, docs/master.md)
ok(wait_until(sub { probe($play, secs => 1, timeout => 10)->{video} > 0 }, 20), 'a new viewer plays with the old token');
is($hls->get("http://127.0.0.1:$ehttp/hls/demo/master.m3u8?token=$token")->{status}, 200, 'HLS with the old token');
my ($tls_key) = slurp("$dir/tls/master.env") =~ /^TLS_KEY=(\S{40,})$/m;
ok($tls_key, 'the master\'s TLS key is in its env file');
is(grep({ /\Q$mkey\E|\Q$admin\E|\Q$tls_key\E/ } qx{$rt logs @{[ ctr('master') ]} 2>&1}, qx{$rt logs @{[ ctr($edge) ]} 2>&1}), 0, 'no key in the containers\' logs (the TLS key neither)');

kill 'TERM', $pub;
reap($pub, 5);
done_testing();
