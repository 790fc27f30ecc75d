"""tests/servers.py says what it builds or fetches, and where, while it does (minutes)."""
import os

from . import servers


def test_building_ferretdb_is_announced(tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr(servers, 'say', said.append)
    monkeypatch.setattr(servers, 'CACHE_DIR', str(tmp_path))
    monkeypatch.setattr(servers.shutil, 'which', lambda name: '/usr/bin/' + name)

    def build(go, binary):
        os.makedirs(os.path.dirname(binary))
        open(binary, 'w').close()
    monkeypatch.setattr(servers, '_build_ferretdb', build)
    binary = servers.ferretdb_binary()
    where = os.path.join(str(tmp_path), 'ferretdb-' + servers.FERRETDB_VERSION)
    assert binary == os.path.join(where, 'ferretdb')
    assert said == [
        'building FerretDB %s once into %s (Go downloads its modules first; about a minute '
        'and a half, and about 1 GB of Go caches)' % (servers.FERRETDB_VERSION, where),
        'built FerretDB %s in 0 s' % servers.FERRETDB_VERSION]
    said.clear()
    assert servers.ferretdb_binary() == binary     # built once: nothing more to say
    assert said == []


def test_the_suite_shows_progress_past_the_capture(pytestconfig, capsys):
    servers.say('(test_servers.py: this line shows progress is not captured)')
    assert capsys.readouterr().err == ''     # not captured: it went to the terminal
