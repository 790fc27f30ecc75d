from setuptools import find_packages, setup

setup(
    name='mongosession_demo',
    version='0.1',
    description='A small Pyramid application showing pyramid_mongosession',
    packages=find_packages(),
    include_package_data=True,
    zip_safe=False,
    install_requires=['pyramid_mongosession[embedded]', 'waitress'],
    entry_points={'paste.app_factory': ['main = mongosession_demo:main']},
)
