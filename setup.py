import os

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, 'README.rst')) as f:
    README = f.read()
with open(os.path.join(here, 'CHANGES.rst')) as f:
    CHANGES = f.read()

embedded_requires = ['mongomock>=4.1']
encryption_requires = ['cryptography>=41']
# The importers of the sessions of the library used before
# (pyramid_mongosession.importers): SignedCookieImporter needs nothing more.
import_redis_requires = ['redis>=4']
import_beaker_requires = ['Beaker>=1.12']
# The test suite; the docs and browser extras add what its docs and browser
# tests need (tests/setup.sh installs all three). The import tests have the
# peer libraries write the old sessions themselves.
tests_require = embedded_requires + encryption_requires + import_redis_requires + [
    'pyramid_session_redis>=1.7,<2',
    'pyramid_beaker>=0.9',
    'Beaker>=1.12',
    'pytest>=7',
    'WebTest>=3',
    'hypothesis>=6',
    'pytest-timeout>=2',
    'pyramid_retry>=2',
    'mockupdb>=1.8',
    'radon>=6',
]
docs_require = ['Sphinx>=7']
browser_requires = ['playwright>=1.40']
# mypy needs the optional imports it checks (cryptography).
lint_requires = encryption_requires + ['ruff>=0.4', 'mypy>=1.10']
dev_requires = (tests_require + docs_require + browser_requires + lint_requires
                + ['coverage>=7.2', 'pytest-cov>=4', 'tox>=4'])
demo_requires = embedded_requires + ['waitress', 'pyramid_jinja2>=2.10']

setup(
    name='pyramid_mongosession',
    version='0.1.dev0',
    description='Server-side sessions for Pyramid, kept in MongoDB',
    long_description=README + '\n\n' + CHANGES,
    long_description_content_type='text/x-rst',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Framework :: Pyramid',
        'Intended Audience :: Developers',
        'License :: OSI Approved :: MIT License',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Topic :: Internet :: WWW/HTTP :: Session',
        'Typing :: Typed',
    ],
    keywords='pyramid session mongodb web wsgi',
    license='MIT',
    packages=find_packages(exclude=['tests', 'tests.*', 'demo', 'benchmarks']),
    include_package_data=True,
    package_data={'pyramid_mongosession': ['py.typed']},
    zip_safe=False,
    python_requires='>=3.9',
    install_requires=[
        'pyramid>=2.0,<3',
        'pymongo>=4.2,<5',
        'WebOb>=1.8',
        'zope.interface',
    ],
    entry_points={
        'console_scripts': ['pmongosession = pyramid_mongosession.cli:main'],
    },
    extras_require={
        'embedded': embedded_requires,
        'encryption': encryption_requires,
        'import-redis': import_redis_requires,
        'import-beaker': import_beaker_requires,
        'test': tests_require,
        'docs': docs_require,
        'browser': browser_requires,
        'lint': lint_requires,
        'dev': dev_requires,
        'demo': demo_requires,
        'bench': ['pyramid_session_redis>=1.8', 'redis>=5', 'pyramid_beaker>=0.9',
                  'Beaker>=1.12'],
    },
)
