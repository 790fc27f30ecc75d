from setuptools import find_packages, setup

setup(
    name='mongosession_demo',
    version='0.1',
    description='A small Pyramid application showing pyramid_mongosession',
    packages=find_packages(),
    package_data={'mongosession_demo': ['templates/*.jinja2', 'static/*.css']},
    zip_safe=False,
    python_requires='>=3.9',
    install_requires=[
        'pyramid>=2.0',
        'pyramid_jinja2>=2.10',
        'pyramid_mongosession[embedded]',
        'waitress',
    ],
    entry_points={'paste.app_factory': ['main = mongosession_demo:main']},
)
